// pgjdbc against a running StreamHouse server. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar JdbcClient.java jdbc:postgresql://host:port/streamhouse
// Exits non-zero with a message on the first failed check.

import java.math.BigDecimal;
import java.sql.*;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void checkEq(Object got, Object want, String what) {
        if (got == null ? want != null : !got.equals(want)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, "streamhouse", "")) {
            DatabaseMetaData md = c.getMetaData();
            checkEq(md.getDatabaseProductName(), "PostgreSQL", "product name");
            check(md.getDatabaseMajorVersion() >= 16, "server major version");

            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM jdbc_orders (id BIGINT NOT NULL, customer TEXT, "
                        + "amount DOUBLE PRECISION, price NUMERIC(10,2), placed TIMESTAMPTZ, qty INT) "
                        + "WITH (partitions = 2, key = 'customer')");
            }

            // Batched inserts through one prepared statement.
            OffsetDateTime placed = OffsetDateTime.of(2026, 11, 26, 9, 30, 0, 0, ZoneOffset.UTC);
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO jdbc_orders VALUES (?, ?, ?, ?, ?, ?)")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setLong(1, i);
                    ps.setString(2, i % 2 == 0 ? "bob" : "ann");
                    ps.setDouble(3, i * 1.5);
                    ps.setBigDecimal(4, new BigDecimal(i + ".25"));
                    ps.setObject(5, placed);
                    ps.setInt(6, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                checkEq(counts.length, 10, "batch size");
                for (int n : counts) {
                    checkEq(n, 1, "rows per batched insert");
                }
            }

            // A query prepared once and run past pgjdbc's server-prepare
            // threshold (5 by default), so the later runs use a named
            // server-side statement and binary results.
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, customer, amount, price, placed, qty FROM jdbc_orders "
                            + "WHERE customer = ? AND qty >= ? ORDER BY id")) {
                for (int run = 0; run < 8; run++) {
                    ps.setString(1, "ann");
                    ps.setInt(2, 3);
                    try (ResultSet rs = ps.executeQuery()) {
                        int rows = 0;
                        long expectId = 3;
                        while (rs.next()) {
                            checkEq(rs.getLong(1), expectId, "id (run " + run + ")");
                            checkEq(rs.getString(2), "ann", "customer");
                            checkEq(rs.getDouble(3), expectId * 1.5, "amount");
                            checkEq(rs.getBigDecimal(4), new BigDecimal(expectId + ".25"), "price");
                            checkEq(rs.getObject(5, OffsetDateTime.class), placed, "placed");
                            checkEq(rs.getInt(6), (int) expectId, "qty");
                            expectId += 2;
                            rows++;
                        }
                        checkEq(rows, 4, "rows (run " + run + ")");
                    }
                }
                ResultSetMetaData rmd = ps.getMetaData();
                checkEq(rmd.getColumnCount(), 6, "column count");
                checkEq(rmd.getColumnTypeName(1), "int8", "id type");
                checkEq(rmd.getColumnTypeName(2), "text", "customer type");
                checkEq(rmd.getColumnTypeName(5), "timestamptz", "placed type");
            }

            // Errors carry SQLSTATEs and the connection stays usable.
            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("SELECT * FROM no_such_stream");
                    throw new AssertionError("expected an error");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "42P01", "undefined table");
                }
                try (ResultSet rs = s.executeQuery("SELECT count(*) FROM jdbc_orders")) {
                    check(rs.next(), "count row");
                    checkEq(rs.getLong(1), 10L, "count after error");
                }
            }

            // Metadata through pg_catalog: the stream as a table, its columns.
            try (ResultSet rs = md.getTables(null, "public", "jdbc_orders", new String[] {"TABLE"})) {
                check(rs.next(), "getTables finds the stream");
                checkEq(rs.getString("TABLE_NAME"), "jdbc_orders", "table name");
            }
            try (ResultSet rs = md.getColumns(null, "public", "jdbc_orders", null)) {
                StringBuilder cols = new StringBuilder();
                while (rs.next()) {
                    cols.append(rs.getString("COLUMN_NAME")).append(':')
                            .append(rs.getString("TYPE_NAME")).append(' ');
                }
                check(cols.toString().startsWith(
                        "id:int8 customer:text amount:float8 price:numeric placed:timestamptz qty:int4"),
                        "getColumns: " + cols);
            }
        }
        System.out.println("jdbc ok");
    }
}
