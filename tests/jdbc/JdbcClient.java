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

    static long count(Connection c, String stream) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT count(*) FROM " + stream)) {
            check(rs.next(), "a count");
            return rs.getLong(1);
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

            // Every column type CREATE STREAM accepts, through setters and getters.
            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM jdbc_types (b BOOLEAN, i2 SMALLINT, i4 INT, i8 BIGINT, "
                        + "f4 REAL, f8 DOUBLE PRECISION, n NUMERIC(12,3), t TEXT, v VARCHAR(10), "
                        + "by BYTEA, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ)");
            }
            java.time.LocalDate day = java.time.LocalDate.of(2026, 11, 26);
            java.time.LocalDateTime local = java.time.LocalDateTime.of(2026, 11, 26, 12, 30, 15, 250_000_000);
            byte[] bytes = {0, 1, (byte) 255};
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO jdbc_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                ps.setBoolean(1, true);
                ps.setShort(2, (short) 12);
                ps.setInt(3, 34000);
                ps.setLong(4, 5_000_000_000L);
                ps.setFloat(5, 1.5f);
                ps.setDouble(6, 2.25);
                ps.setBigDecimal(7, new BigDecimal("12345.678"));
                ps.setString(8, "héllo");
                ps.setString(9, "v");
                ps.setBytes(10, bytes);
                ps.setObject(11, day);
                ps.setObject(12, local);
                ps.setObject(13, placed);
                checkEq(ps.executeUpdate(), 1, "typed insert");
                for (int i = 1; i <= 13; i++) {
                    ps.setNull(i, Types.NULL);
                }
                checkEq(ps.executeUpdate(), 1, "all-NULL insert");
            }
            try (Statement s = c.createStatement();
                    ResultSet rs = s.executeQuery("SELECT * FROM jdbc_types ORDER BY i4 NULLS LAST")) {
                check(rs.next(), "typed row");
                checkEq(rs.getBoolean(1), true, "bool");
                checkEq(rs.getShort(2), (short) 12, "int2");
                checkEq(rs.getInt(3), 34000, "int4");
                checkEq(rs.getLong(4), 5_000_000_000L, "int8");
                checkEq(rs.getFloat(5), 1.5f, "float4");
                checkEq(rs.getDouble(6), 2.25, "float8");
                checkEq(rs.getBigDecimal(7), new BigDecimal("12345.678"), "numeric");
                checkEq(rs.getString(8), "héllo", "text");
                checkEq(rs.getString(9), "v", "varchar");
                check(java.util.Arrays.equals(rs.getBytes(10), bytes), "bytea");
                checkEq(rs.getObject(11, java.time.LocalDate.class), day, "date");
                checkEq(rs.getObject(12, java.time.LocalDateTime.class), local, "timestamp");
                checkEq(rs.getObject(13, OffsetDateTime.class), placed, "timestamptz");
                check(rs.next(), "NULL row");
                for (int i = 1; i <= 13; i++) {
                    rs.getObject(i);
                    check(rs.wasNull(), "column " + i + " NULL");
                }
            }

            // A cursor-style fetch: with autocommit off pgjdbc executes the
            // portal 10 rows at a time (PortalSuspended between batches).
            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM jdbc_many (id BIGINT)");
                s.execute("INSERT INTO jdbc_many SELECT value FROM generate_series(1, 1000)");
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.setFetchSize(10);
                try (ResultSet rs = s.executeQuery("SELECT id FROM jdbc_many ORDER BY id")) {
                    long expect = 1;
                    while (rs.next()) {
                        checkEq(rs.getLong(1), expect, "fetched id");
                        expect++;
                    }
                    checkEq(expect, 1001L, "rows fetched in batches");
                }
            }
            c.commit();
            c.setAutoCommit(true);

            // Transactions: with autocommit off, writes wait for commit();
            // rollback() discards them; reads in the block see them.
            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM jdbc_tx (id BIGINT)");
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_tx VALUES (?)")) {
                for (long i = 1; i <= 3; i++) {
                    ps.setLong(1, i);
                    checkEq(ps.executeUpdate(), 1, "insert in a block");
                }
            }
            checkEq(count(c, "jdbc_tx"), 3L, "own writes visible in the block");
            try (Connection other = DriverManager.getConnection(url, "streamhouse", "")) {
                checkEq(count(other, "jdbc_tx"), 0L, "others see nothing before commit");
            }
            c.rollback();
            checkEq(count(c, "jdbc_tx"), 0L, "rolled back");
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO jdbc_tx VALUES (10), (20)");
                try {
                    s.execute("CREATE STREAM jdbc_tx2 (id BIGINT)");
                    throw new AssertionError("DDL in a transaction block was accepted");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "25001", "DDL in a block");
                }
            }
            c.commit();
            c.setAutoCommit(true);
            try (Connection other = DriverManager.getConnection(url, "streamhouse", "")) {
                checkEq(count(other, "jdbc_tx"), 2L, "committed");
            }

            // Statement.cancel() sends a CancelRequest; the query stops with 57014.
            try (Statement s = c.createStatement()) {
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(500);
                        s.cancel();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                canceller.start();
                long started = System.nanoTime();
                try {
                    s.executeQuery("SELECT count(*) FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3");
                    throw new AssertionError("expected the query to be cancelled");
                } catch (SQLException e) {
                    checkEq(e.getSQLState(), "57014", "cancelled");
                }
                canceller.join();
                check(System.nanoTime() - started < 10_000_000_000L, "cancel took too long");
                try (ResultSet rs = s.executeQuery("SELECT 1")) {
                    check(rs.next(), "usable after cancel");
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
