//! Migration 0013: segment key lists move from one JSON column per list to one row per key.
//! A database at migration 0012 holding lists in the columns is migrated, and the store then
//! reads the same lists, in the same order, and edits them one key at a time.

use sqlx::Connection;
use vexil_schema::delta::ListDelta;
use vexil_server::Store;
use vexil_server::auth::Actor;
use vexil_server::db::{Db, DbOptions};
use vexil_server::store::WriteContext;
use vexil_testkit::{Backend, TestDatabase};

/// Rows as release 0012 wrote them: segment `s` with `included` in a non-sorted order, `empty`
/// with no keys.
const SEED: [&str; 4] = [
    "INSERT INTO projects (key, name, created_at, updated_at)
     VALUES ('p', 'P', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
    "INSERT INTO environments (project_id, key, name, version, created_at, updated_at)
     SELECT id, 'e', 'E', 2, created_at, updated_at FROM projects",
    "INSERT INTO segments (environment_id, key, name, body, included, excluded, included_count,
                           excluded_count, version, created_at, updated_at)
     SELECT id, 's', 'S', '{\"key\": \"s\", \"name\": \"S\"}', '[\"c\", \"a\", \"b\"]', '[\"x\"]',
            3, 1, 4, created_at, updated_at FROM environments",
    "INSERT INTO segments (environment_id, key, name, body, included, excluded, included_count,
                           excluded_count, version, created_at, updated_at)
     SELECT id, 'empty', 'Empty', '{\"key\": \"empty\", \"name\": \"Empty\"}', '[]', '[]',
            0, 0, 1, created_at, updated_at FROM environments",
];

/// Creates the database at migration 0012 and writes [`SEED`].
async fn seed_at_0012(db: &TestDatabase) {
    match db.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::migrate!("../schema/migrations/postgres")
                .run_to(12, &mut c)
                .await
                .unwrap();
            for sql in SEED {
                let sql = sql.replace("'2026-01-01T00:00:00.000000Z'", "now()");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
        Backend::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db.url)
                .create_if_missing(true)
                .foreign_keys(true);
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            sqlx::migrate!("../schema/migrations/sqlite")
                .run_to(12, &mut c)
                .await
                .unwrap();
            for sql in SEED {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

async fn lists_move_to_rows(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    seed_at_0012(&db).await;
    let pool = Db::connect(&DbOptions {
        url: db.url.clone(),
        max_connections: 2,
    })
    .await
    .unwrap();
    pool.migrate().await.unwrap();
    let store = Store::new(pool);

    let s = store.get_segment("p", "e", "s").await.unwrap().segment;
    assert_eq!(
        (s.included.to_vec(), s.excluded.to_vec()),
        (
            vec!["c".to_owned(), "a".to_owned(), "b".to_owned()],
            vec!["x".to_owned()]
        )
    );
    assert_eq!(s.version, 4);
    let snapshot = store.environment_snapshot("p", "e").await.unwrap();
    let keys: Vec<(&str, usize, usize)> = snapshot
        .segments
        .iter()
        .map(|s| (s.key.as_str(), s.included.len(), s.excluded.len()))
        .collect();
    assert_eq!(keys, vec![("empty", 0, 0), ("s", 3, 1)]);

    // Edits continue after the migrated positions: removal keeps the order, additions append.
    let ctx = WriteContext {
        actor: Actor::system(),
        request_id: None,
    };
    let edited = store
        .edit_segment_keys(
            &ctx,
            ("p", "e", "s"),
            ListDelta {
                add: vec!["d".into(), "c".into()],
                remove: vec!["a".into()],
            },
            ListDelta {
                add: vec![],
                remove: vec!["x".into(), "nope".into()],
            },
            Some(4),
        )
        .await
        .unwrap();
    assert_eq!(edited.segment.included, vec!["c", "b", "d"]);
    assert!(edited.segment.excluded.is_empty());
    assert_eq!(edited.segment.version, 5);
    let listed = store.list_segments("p", "e", None, None).await.unwrap();
    let counts: Vec<(i64, i64)> = listed
        .items
        .iter()
        .map(|s| (s.included_count, s.excluded_count))
        .collect();
    assert_eq!(counts, vec![(0, 0), (3, 0)]);
    // The empty segment takes keys from position 1.
    let empty = store
        .edit_segment_keys(
            &ctx,
            ("p", "e", "empty"),
            ListDelta {
                add: vec!["z".into(), "y".into(), "z".into()],
                remove: vec![],
            },
            ListDelta::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(empty.segment.included, vec!["z", "y"]);
    // Deleting a segment takes its key rows with it.
    store.delete_segment(&ctx, "p", "e", "empty").await.unwrap();
    let after = store.environment_snapshot("p", "e").await.unwrap();
    assert_eq!(after.segments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_lists_migrate_to_rows_on_postgres() {
    lists_move_to_rows(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_lists_migrate_to_rows_on_sqlite() {
    lists_move_to_rows(Backend::Sqlite).await;
}
