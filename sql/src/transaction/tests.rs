use super::*;

#[test]
fn a_block_opens_fails_and_ends() {
    let t = Transaction::default();
    assert_eq!(t.state(), BlockState::Idle);
    t.fail();
    assert_eq!(t.state(), BlockState::Idle, "no block to fail");
    assert!(matches!(t.end(), Ending::NoBlock));
    assert!(t.begin());
    assert!(!t.begin(), "a second BEGIN goes on in the same block");
    assert_eq!(t.state(), BlockState::Open);
    t.fail();
    assert_eq!(t.state(), BlockState::Failed);
    assert!(matches!(t.end(), Ending::RolledBack));
    assert_eq!(t.state(), BlockState::Idle);
    assert!(t.begin());
    assert!(matches!(t.end(), Ending::Commit(w) if w.is_empty()));
}

#[test]
fn savepoints_need_a_block_and_a_name_that_exists() {
    let t = Transaction::default();
    let e = t.savepoint("a").unwrap_err();
    assert_eq!(e.sqlstate(), "25P01");
    assert_eq!(t.release("a").unwrap_err().sqlstate(), "25P01");
    assert_eq!(t.rollback_to("a").unwrap_err().sqlstate(), "25P01");
    t.begin();
    t.savepoint("a").unwrap();
    t.savepoint("b").unwrap();
    assert_eq!(t.release("nope").unwrap_err().sqlstate(), "3B001");
    // Releasing `a` forgets `b` too.
    t.release("a").unwrap();
    assert_eq!(t.rollback_to("b").unwrap_err().sqlstate(), "3B001");
    // ... and an unknown savepoint fails the block, as in PostgreSQL.
    assert_eq!(t.state(), BlockState::Failed);
    assert_eq!(
        t.savepoint("c").unwrap_err().sqlstate(),
        "25P02",
        "a failed block takes no new savepoint"
    );
}

#[test]
fn rolling_back_to_a_savepoint_revives_a_failed_block() {
    let t = Transaction::default();
    t.begin();
    t.savepoint("s").unwrap();
    t.fail();
    assert_eq!(t.state(), BlockState::Failed);
    t.rollback_to("s").unwrap();
    assert_eq!(t.state(), BlockState::Open);
    // The savepoint stays after ROLLBACK TO.
    t.fail();
    t.rollback_to("s").unwrap();
    t.release("s").unwrap();
    t.rollback();
    assert_eq!(t.state(), BlockState::Idle);
}

#[test]
fn sizes_read_like_postgresql_settings() {
    assert_eq!(parse_size("1024").unwrap(), 1024);
    assert_eq!(parse_size("256MB").unwrap(), 256 << 20);
    assert_eq!(parse_size(" 8 kB ").unwrap(), 8 << 10);
    assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("MB").is_err());
    assert!(parse_size("-1").is_err());
    assert!(parse_size("99999999999999999999").is_err());
    assert!(parse_size("99999999999TB").is_err());
}
