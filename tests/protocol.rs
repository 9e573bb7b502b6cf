//! Everything a driver does, through phigate, against a real PostgreSQL.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw::{self, Raw, msg};
use common::{Options, Pg, Proxy, Setup, code, count, start, wait_upstream_gone};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

/// The rows of a simple-query result, as text.
fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements() {
    let (_pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    let msgs = c
        .simple_query("create temp table t(a int, b text); insert into t values (1,'x'),(2,null); select * from t order by a; select 42 as answer")
        .await
        .unwrap();
    let got = rows(&msgs);
    let some = |v: &str| Some(v.to_owned());
    assert_eq!(
        got,
        vec![
            vec![some("1"), some("x")],
            vec![some("2"), None],
            vec![some("42")]
        ]
    );
    let completions: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completions, vec![0, 2, 2, 1]);
    // An empty query string is answered like PostgreSQL does.
    assert!(rows(&c.simple_query("").await.unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_and_text_formats() {
    let (_pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    c.batch_execute(
        "create table vals(i int4, big int8, t text, b bytea, ts timestamptz, n numeric, ok bool)",
    )
    .await
    .unwrap();
    let stmt = c
        .prepare_typed(
            "insert into vals values ($1, $2, $3, $4, now(), 1.5, $5) returning i",
            &[Type::INT4, Type::INT8, Type::TEXT, Type::BYTEA, Type::BOOL],
        )
        .await
        .unwrap();
    for i in 0..20i32 {
        let row = c
            .query_one(
                &stmt,
                &[
                    &i,
                    &(i as i64 * 1_000_000_000),
                    &format!("row {i}"),
                    &vec![i as u8; 3],
                    &(i % 2 == 0),
                ],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }
    // Binary results (tokio-postgres asks for binary), a named statement reused.
    let sel = c
        .prepare("select i, big, t, b, ok from vals where i = $1")
        .await
        .unwrap();
    for i in [3i32, 7, 19] {
        let r = c.query_one(&sel, &[&i]).await.unwrap();
        assert_eq!(r.get::<_, i64>(1), i as i64 * 1_000_000_000);
        assert_eq!(r.get::<_, &str>(2), format!("row {i}"));
        assert_eq!(r.get::<_, Vec<u8>>(3), vec![i as u8; 3]);
        assert_eq!(r.get::<_, bool>(4), i % 2 == 0);
    }
    // Text-format results through the simple protocol agree.
    let m = rows(
        &c.simple_query("select t from vals where i = 5")
            .await
            .unwrap(),
    );
    assert_eq!(m, vec![vec![Some("row 5".to_owned())]]);
    // An error in the extended protocol, then the session goes on.
    let e = c
        .query("select * from no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P01");
    let e = c.prepare("selec 1").await.unwrap_err();
    assert_eq!(code(&e), "42601");
    assert_eq!(count(&c, "select count(*) from vals").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_keep_their_order() {
    let (_pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    let stmt = c.prepare("select $1::int4 * 2").await.unwrap();
    // tokio-postgres pipelines concurrent requests on one connection; one of them fails.
    let futs = (0..200i32).map(|i| {
        let c = &c;
        let stmt = &stmt;
        async move {
            if i == 77 {
                c.query("select 1/0", &[]).await.map(|_| -1)
            } else {
                c.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0))
            }
        }
    });
    let results = futures_util::future::join_all(futs).await;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, i as i32 * 2),
            Err(e) => {
                assert_eq!(i, 77);
                assert_eq!(code(&e), "22012");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_limited_portals_in_a_transaction() {
    let (_pg, proxy) = start(Options::default()).await;
    let mut c = proxy.alice().await;
    let tx = c.transaction().await.unwrap();
    let stmt = tx
        .prepare("select g from generate_series(1, 10) g")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 3).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 3);
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_text_and_binary() {
    let (_pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    c.batch_execute("create table c(id int, note text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..10 {
        let data: String = (0..1000)
            .map(|i| format!("{}\tnote {}\n", chunk * 1000 + i, i))
            .collect();
        sink.send(Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 10_000);
    let out = c
        .copy_out("copy (select * from c order by id limit 3) to stdout with (format csv)")
        .await
        .unwrap();
    let data: Vec<Bytes> = out.try_collect().await.unwrap();
    assert_eq!(data.concat(), b"0,note 0\n1,note 1\n2,note 2\n");
    // Binary COPY round trip.
    let out = c
        .copy_out("copy c to stdout with (format binary)")
        .await
        .unwrap();
    let bin: Vec<Bytes> = out.try_collect().await.unwrap();
    c.batch_execute("create table c2(id int, note text)")
        .await
        .unwrap();
    let sink = c
        .copy_in("copy c2 from stdin with (format binary)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(bin.concat())).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 10_000);
    // A COPY that fails part-way leaves nothing behind and the session usable.
    let sink = c.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tok\nnot-a-number\tbad\n"))
        .await
        .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(code(&e), "22P02");
    assert_eq!(count(&c, "select count(*) from c").await, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_errors_inside_them() {
    let (pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    c.batch_execute("create table acct(id int primary key, v int)")
        .await
        .unwrap();
    c.batch_execute("begin; insert into acct values (1, 1)")
        .await
        .unwrap();
    let e = c
        .batch_execute("insert into acct values (1, 2)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
    let e = c.query("select 1", &[]).await.unwrap_err();
    assert_eq!(
        code(&e),
        "25P02",
        "the transaction is aborted as in PostgreSQL"
    );
    c.batch_execute("rollback").await.unwrap();
    c.batch_execute(
        "begin; insert into acct values (2, 2); savepoint s; insert into acct values (2, 3)",
    )
    .await
    .unwrap_err();
    c.batch_execute("rollback to savepoint s; commit")
        .await
        .unwrap();
    let direct = pg.direct().await;
    let ids: Vec<i32> = direct
        .query("select id from acct", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_listen_notify() {
    let (_pg, proxy) = start(Options::default()).await;
    let (client, mut conn) =
        tokio_postgres::connect(&proxy.conninfo("alice", "alice-pw"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    client
        .batch_execute("do $$ begin raise notice 'hello from plpgsql'; end $$")
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
    {
        Some(AsyncMessage::Notice(n)) => assert_eq!(n.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }
    client.batch_execute("listen ward_3").await.unwrap();
    let other = proxy.alice().await;
    other
        .batch_execute("notify ward_3, 'bed 12'")
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
    {
        Some(AsyncMessage::Notification(n)) => {
            assert_eq!((n.channel(), n.payload()), ("ward_3", "bed 12"));
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_100_mb() {
    let (_pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    c.batch_execute("create table big(id int, doc text)")
        .await
        .unwrap();
    let doc: String = "0123456789abcdef".repeat(100 * 1024 * 1024 / 16);
    c.execute("insert into big values (1, $1)", &[&doc])
        .await
        .unwrap();
    let row = c
        .query_one("select doc from big where id = 1", &[])
        .await
        .unwrap();
    let back: &str = row.get(0);
    assert_eq!(back.len(), doc.len());
    assert!(back == doc);
    // And as text through the simple protocol.
    let m = rows(
        &c.simple_query("select length(doc), doc from big")
            .await
            .unwrap(),
    );
    assert_eq!(m[0][0].as_deref(), Some("104857600"));
    assert_eq!(m[0][1].as_ref().map(String::len), Some(doc.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_close_and_terminate() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    // nothing kept for reuse: Terminate ends the upstream session
    setup.upstream_line("pool_size = 0");
    let proxy = Proxy::with_setup(setup).await;
    let direct = pg.direct().await;
    let c = proxy.alice().await;
    let stmt = c.prepare("select 1").await.unwrap();
    drop(stmt); // tokio-postgres sends Close for it
    c.query_one("select count(*) from pg_prepared_statements", &[])
        .await
        .unwrap();
    let sessions =
        "select count(*) from pg_stat_activity where application_name like 'phigate:alice%'";
    assert_eq!(count(&direct, sessions).await, 1);
    drop(c); // Terminate
    wait_upstream_gone(&direct, "alice").await;
}

/// The extended-protocol messages drivers like JDBC use and tokio-postgres does not (Describe of a portal, Flush without Sync, Close of both kinds), byte by byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_portals_describe_flush_and_close() {
    let (_pg, proxy) = start(Options::default()).await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let tags = |msgs: &[raw::Msg]| msgs.iter().map(|m| m.0).collect::<Vec<u8>>();
    // Parse + Describe statement + Flush: answered without a Sync.
    let mut b = msg(b'P', b"s1\0select $1::int4 + 1 as n\0\0\x01\0\0\0\x17");
    b.extend(msg(b'D', b"Ss1\0"));
    b.extend(msg(b'H', b""));
    r.send(&b).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(r.recv().await.unwrap());
    }
    assert_eq!(tags(&got), b"1tT");
    // Bind a named portal, Describe it, Execute, Close both, Sync.
    let mut b = msg(b'B', b"p1\0s1\0\0\0\0\x01\0\0\0\x0241\0\0");
    b.extend(msg(b'D', b"Pp1\0"));
    b.extend(msg(b'E', b"p1\0\0\0\0\0"));
    b.extend(msg(b'C', b"Pp1\0"));
    b.extend(msg(b'C', b"Ss1\0"));
    b.extend(msg(b'S', b""));
    r.send(&b).await;
    let mut got = Vec::new();
    while got.last().map(|m: &raw::Msg| m.0) != Some(b'Z') {
        got.push(r.recv().await.unwrap());
    }
    assert_eq!(tags(&got), b"2TDC33Z");
    assert_eq!(got[2].1[6..], *b"42", "the row holds 42");
    // The closed statement is gone upstream too.
    let mut b = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
    b.extend(msg(b'S', b""));
    r.send(&b).await;
    let (tag, body) = r.recv().await.unwrap();
    assert_eq!((tag, raw::sqlstate(&body).as_str()), (b'E', "26000"));
    assert_eq!(r.recv().await.unwrap().0, b'Z');
}
