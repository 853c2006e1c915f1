//! The console's flags list with 10,000 flags: the whole server-side render of
//! `GET /projects/{p}/flags` (session lookup, the list query with every environment's
//! on/off state, HTML) over a real socket, first page and a filtered page. Goal: ≤ 50 ms
//! on 2 cores. PostgreSQL by default, SQLite with `VEXIL_BENCH_BACKEND=sqlite`.
//!
//! ```sh
//! cargo bench -p vexil-server --bench console
//! ```

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use vexil_testkit::{Backend, TestApp, spawn_app};

const FLAGS: usize = 10_000;

async fn setup() -> (TestApp, String) {
    let backend = match std::env::var("VEXIL_BENCH_BACKEND").as_deref() {
        Ok("sqlite") => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let app = spawn_app(backend).await;
    app.project("p", &["production", "staging", "development"])
        .await;
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..FLAGS).step_by(8) {
                let res = app
                    .post(
                        "/api/v1/projects/p/flags",
                        &json!({"key": format!("flag-{i:05}"), "name": format!("Flag {i}"),
                                "kind": "boolean", "tags": if i % 3 == 0 { vec!["web"] } else { vec![] },
                                "variations": [{"value": true}, {"value": false}]}),
                    )
                    .send()
                    .await
                    .expect("create flag");
                assert_eq!(res.status(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let app = Arc::try_unwrap(app).expect("writers are done");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = client
        .post(app.url("/sign-in"))
        .form(&[("token", app.admin_token.as_str())])
        .send()
        .await
        .expect("sign in");
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie pair")
        .to_owned();
    (app, cookie)
}

fn flags_list(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (app, cookie) = rt.block_on(setup());
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let req = client.get(app.url(path)).header("cookie", &cookie);
        rt.block_on(async move {
            let res = req.send().await.expect("page");
            assert_eq!(res.status(), 200);
            res.bytes().await.expect("body").len()
        })
    };
    let mut group = c.benchmark_group("console_flags_list_10k");
    group.sample_size(30);
    group.bench_function("first_page", |b| b.iter(|| get("/projects/p/flags")));
    group.bench_function("page_after_cursor", |b| {
        b.iter(|| get("/projects/p/flags?cursor=flag-05000"))
    });
    group.bench_function("search_and_tag", |b| {
        b.iter(|| get("/projects/p/flags?q=flag-09&tag=web"))
    });
    group.bench_function("off_in_production", |b| {
        b.iter(|| get("/projects/p/flags?env=production&state=off&cursor=flag-09000"))
    });
    group.finish();
    rt.block_on(app.stop());
}

criterion_group!(benches, flags_list);
criterion_main!(benches);
