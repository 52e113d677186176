//! `CommandGetXdbcTypeInfo`: the SQL types a stream column can have, as
//! JDBC/ODBC describe types (the Flight SQL JDBC driver's
//! `DatabaseMetaData.getTypeInfo`).

use std::sync::OnceLock;

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};

/// One type: (name, JDBC type, column size, literal quote, create params,
/// fixed precision/scale, date-time subcode).
type Row = (
    &'static str,
    XdbcDataType,
    Option<i32>,
    Option<&'static str>,
    Option<&'static [&'static str]>,
    bool,
    Option<XdbcDatetimeSubcode>,
);

const TYPES: &[Row] = &[
    (
        "boolean",
        XdbcDataType::XdbcBit,
        Some(1),
        None,
        None,
        false,
        None,
    ),
    (
        "smallint",
        XdbcDataType::XdbcSmallint,
        Some(5),
        None,
        None,
        false,
        None,
    ),
    (
        "integer",
        XdbcDataType::XdbcInteger,
        Some(10),
        None,
        None,
        false,
        None,
    ),
    (
        "bigint",
        XdbcDataType::XdbcBigint,
        Some(19),
        None,
        None,
        false,
        None,
    ),
    (
        "real",
        XdbcDataType::XdbcReal,
        Some(8),
        None,
        None,
        false,
        None,
    ),
    (
        "double precision",
        XdbcDataType::XdbcDouble,
        Some(17),
        None,
        None,
        false,
        None,
    ),
    (
        "numeric",
        XdbcDataType::XdbcNumeric,
        Some(38),
        None,
        Some(&["precision", "scale"]),
        true,
        None,
    ),
    (
        "text",
        XdbcDataType::XdbcVarchar,
        None,
        Some("'"),
        None,
        false,
        None,
    ),
    (
        "character varying",
        XdbcDataType::XdbcVarchar,
        None,
        Some("'"),
        Some(&["length"]),
        false,
        None,
    ),
    (
        "bytea",
        XdbcDataType::XdbcVarbinary,
        None,
        Some("'"),
        None,
        false,
        None,
    ),
    (
        "date",
        XdbcDataType::XdbcDate,
        Some(10),
        Some("'"),
        None,
        false,
        // ODBC's SQL_CODE_DATE is 1, which the enum names "year".
        Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
    ),
    (
        "time",
        XdbcDataType::XdbcTime,
        Some(15),
        Some("'"),
        None,
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
    ),
    (
        "timestamp",
        XdbcDataType::XdbcTimestamp,
        Some(26),
        Some("'"),
        None,
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ),
    (
        "timestamp with time zone",
        XdbcDataType::XdbcTimestamp,
        Some(32),
        Some("'"),
        None,
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone),
    ),
    (
        "interval",
        XdbcDataType::XdbcInterval,
        None,
        Some("'"),
        None,
        false,
        None,
    ),
    (
        "json",
        XdbcDataType::XdbcVarchar,
        None,
        Some("'"),
        None,
        false,
        None,
    ),
];

/// The type table, built once.
pub fn type_info() -> &'static XdbcTypeInfoData {
    static INFO: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        for &(name, data_type, size, quote, params, fixed, subcode) in TYPES {
            let numeric = matches!(
                data_type,
                XdbcDataType::XdbcSmallint
                    | XdbcDataType::XdbcInteger
                    | XdbcDataType::XdbcBigint
                    | XdbcDataType::XdbcReal
                    | XdbcDataType::XdbcDouble
                    | XdbcDataType::XdbcNumeric
            );
            b.append(XdbcTypeInfo {
                type_name: name.to_string(),
                data_type,
                column_size: size,
                literal_prefix: quote.map(str::to_string),
                literal_suffix: quote.map(str::to_string),
                create_params: params.map(|p| p.iter().map(|s| s.to_string()).collect()),
                nullable: Nullable::NullabilityNullable,
                case_sensitive: quote.is_some() && subcode.is_none(),
                searchable: Searchable::Full,
                unsigned_attribute: numeric.then_some(false),
                fixed_prec_scale: fixed,
                auto_increment: numeric.then_some(false),
                local_type_name: Some(name.to_string()),
                minimum_scale: fixed.then_some(0),
                maximum_scale: fixed.then_some(38),
                sql_data_type: data_type,
                datetime_subcode: subcode,
                num_prec_radix: numeric.then_some(10),
                interval_precision: None,
            });
        }
        b.build().expect("static type table")
    })
}
