//! Proves that `hf-hub` (the blocking client) lists and downloads from the fake Hub in
//! tests/support/fake_hub.rs, with its cache behaving as on the real Hub, and that the
//! generated cats_vs_dogs parquet files have the real dataset's layout.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use arrow_array::{Array, BinaryArray, Int64Array, StructArray};
use arrow_schema::DataType;
use hf_hub::repository::RepoTreeEntry;
use hf_hub::{HFClient, HFClientSync, HFError};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::catsdogs_fixture::{HF_METADATA_JSON, catsdogs_label, catsdogs_parquet};
use support::fake_hub::{FakeHub, FakeRepo, sha256_hex};
use support::scratch_dir;

const SHA: &str = "4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";
const SHARD0: &str = "data/train-00000-of-00002.parquet";
const SHARD1: &str = "data/train-00001-of-00002.parquet";
const README: &str = "---\nlicense: other\n---\n# Cats vs dogs (fake)\n";
const ODD_NAME: &str = "extra/notes with space #1.txt";

fn catsdogs_repo() -> (FakeRepo, Vec<u8>, Vec<u8>) {
    let shard0 = catsdogs_parquet(40, 1, &[3], &[5, 30]);
    let shard1 = catsdogs_parquet(30, 2, &[], &[]);
    let repo = FakeRepo::new(
        "microsoft/cats_vs_dogs",
        SHA,
        vec![
            (SHARD0.into(), shard0.clone()),
            (SHARD1.into(), shard1.clone()),
            ("README.md".into(), README.as_bytes().to_vec()),
            (ODD_NAME.into(), b"odd".to_vec()),
        ],
    );
    (repo, shard0, shard1)
}

fn client(hub: &FakeHub, cache: &Path, token: Option<&str>) -> HFClientSync {
    let mut builder = HFClient::builder()
        .endpoint(hub.endpoint())
        .cache_dir(cache);
    if let Some(token) = token {
        builder = builder.token(token);
    }
    HFClientSync::from_inner(builder.build().unwrap()).unwrap()
}

/// `(requests, file downloads)` made while running `f`.
fn delta<T>(hub: &FakeHub, f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (requests, downloads) = (hub.requests(), hub.file_downloads());
    let out = f();
    (
        out,
        hub.requests() - requests,
        hub.file_downloads() - downloads,
    )
}

#[test]
fn info_tree_download_cache_and_offline() {
    let (repo, shard0, shard1) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo]);
    let cache = scratch_dir("fake-hub-download");
    let client = client(&hub, &cache, None);
    let ds = client.dataset("microsoft", "cats_vs_dogs");

    let info = ds.info().send().unwrap();
    assert_eq!(info.id, "microsoft/cats_vs_dogs");
    assert_eq!(info.sha.as_deref(), Some(SHA));
    let mut siblings: Vec<String> = info
        .siblings
        .unwrap()
        .into_iter()
        .map(|s| s.rfilename)
        .collect();
    siblings.sort();
    assert_eq!(siblings, ["README.md", SHARD0, SHARD1, ODD_NAME]);
    let at_sha = ds.info().revision(SHA).send().unwrap();
    assert_eq!(at_sha.sha.as_deref(), Some(SHA));

    let tree = ds.list_tree().recursive(true).send().unwrap();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in tree {
        match entry {
            RepoTreeEntry::File { path, size, .. } => files.push((path, size)),
            RepoTreeEntry::Directory { path, .. } => dirs.push(path),
        }
    }
    files.sort();
    assert_eq!(
        files,
        [
            ("README.md".to_owned(), README.len() as u64),
            (SHARD0.to_owned(), shard0.len() as u64),
            (SHARD1.to_owned(), shard1.len() as u64),
            (ODD_NAME.to_owned(), 3),
        ]
    );
    dirs.sort();
    assert_eq!(dirs, ["data", "extra"]);
    let top = ds.list_tree().send().unwrap();
    assert_eq!(top.len(), 3, "non-recursive: data/, extra/, README.md");
    let sub = ds.list_tree().path_in_repo("data").send().unwrap();
    assert_eq!(sub.len(), 2);

    // First download: HEAD + GET per file.
    let (paths, first_requests, first_downloads) = delta(&hub, || {
        [SHARD0, SHARD1].map(|f| ds.download_file().filename(f).send().unwrap())
    });
    assert_eq!(std::fs::read(&paths[0]).unwrap(), shard0);
    assert_eq!(std::fs::read(&paths[1]).unwrap(), shard1);
    assert_eq!(first_downloads, 2);
    assert!(paths[0].ends_with(format!("snapshots/{SHA}/{SHARD0}")));

    // Second online download of revision `main`: a conditional HEAD each, no GET.
    let (again, second_requests, second_downloads) = delta(&hub, || {
        [SHARD0, SHARD1].map(|f| ds.download_file().filename(f).send().unwrap())
    });
    assert_eq!(again, paths);
    assert_eq!(second_downloads, 0, "second pass must come from the cache");

    // Offline: no requests at all.
    let (offline, offline_requests, _) = delta(&hub, || {
        [SHARD0, SHARD1].map(|f| {
            ds.download_file()
                .filename(f)
                .local_files_only(true)
                .send()
                .unwrap()
        })
    });
    assert_eq!(offline, paths);
    assert_eq!(offline_requests, 0);

    // Pinned to the commit sha with the snapshot present: no requests either.
    let (pinned, pinned_requests, _) = delta(&hub, || {
        ds.download_file()
            .filename(SHARD0)
            .revision(SHA)
            .send()
            .unwrap()
    });
    assert_eq!(pinned, paths[0]);
    assert_eq!(pinned_requests, 0);

    // Not cached + offline → LocalEntryNotFound, still no request.
    let (missing, missing_requests, _) = delta(&hub, || {
        ds.download_file()
            .filename("README.md")
            .local_files_only(true)
            .send()
    });
    assert!(
        matches!(missing, Err(HFError::LocalEntryNotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(missing_requests, 0);

    // Percent-encoded path segments and revision.
    let odd = ds
        .download_file()
        .filename(ODD_NAME)
        .revision("refs/heads/main")
        .send()
        .unwrap();
    assert_eq!(std::fs::read(odd).unwrap(), b"odd");
    assert!(
        hub.request_log()
            .iter()
            .any(|l| l
                .contains("/resolve/refs%2Fheads%2Fmain/extra/notes%20with%20space%20%231.txt")),
        "{:#?}",
        hub.request_log()
    );

    // Range reads: HEAD then GET with `Range` → 206.
    let (bytes, range_requests, _) = delta(&hub, || {
        ds.download_file_to_bytes()
            .filename(SHARD1)
            .range(4..20)
            .send()
            .unwrap()
    });
    assert_eq!(&bytes[..], &shard1[4..20]);

    println!(
        "requests: first download {first_requests} ({first_downloads} GETs), \
         second (cached) download {second_requests} ({second_downloads} GETs), \
         local_files_only {offline_requests}, pinned sha {pinned_requests}, range {range_requests}"
    );
    println!("log: {:#?}", hub.request_log());
}

#[test]
fn generated_parquet_has_the_cats_vs_dogs_layout() {
    let (repo, shard0, _) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo]);
    let cache = scratch_dir("fake-hub-parquet");
    let path = client(&hub, &cache, None)
        .dataset("microsoft", "cats_vs_dogs")
        .download_file()
        .filename(SHARD0)
        .send()
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), shard0);

    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let hf = kv.iter().find(|kv| kv.key == "huggingface").unwrap();
    assert_eq!(hf.value.as_deref(), Some(HF_METADATA_JSON));
    let features: serde_json::Value = serde_json::from_str(HF_METADATA_JSON).unwrap();
    assert_eq!(
        features["info"]["features"]["labels"]["names"],
        serde_json::json!(["cat", "dog"])
    );
    let schema = builder.schema().clone();
    assert_eq!(schema.metadata()["huggingface"], HF_METADATA_JSON);
    let DataType::Struct(image_fields) = schema.field_with_name("image").unwrap().data_type()
    else {
        panic!("image is not a struct: {schema:?}");
    };
    assert_eq!(image_fields[0].name(), "bytes");
    assert_eq!(image_fields[0].data_type(), &DataType::Binary);
    assert_eq!(image_fields[1].name(), "path");
    assert_eq!(image_fields[1].data_type(), &DataType::Utf8);
    assert_eq!(
        schema.field_with_name("labels").unwrap().data_type(),
        &DataType::Int64
    );
    assert!(builder.metadata().num_row_groups() >= 1);
    let compression = builder.metadata().row_group(0).column(0).compression();
    assert_eq!(compression, parquet::basic::Compression::SNAPPY);

    let mut row = 0;
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let images = batch
            .column_by_name("image")
            .unwrap()
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let bytes = images
            .column_by_name("bytes")
            .unwrap()
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        let labels = batch
            .column_by_name("labels")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            assert_eq!(labels.value(i), catsdogs_label(row, 40));
            let decoded = image::load_from_memory(bytes.value(i));
            match row {
                3 => assert!(decoded.is_err(), "row 3 must be corrupt"),
                5 | 30 => assert_eq!(decoded.unwrap().color(), image::ColorType::L8),
                _ => {
                    let img = decoded.unwrap();
                    assert_eq!(img.color(), image::ColorType::Rgb8);
                    assert!((40..=64).contains(&img.width()), "{}", img.width());
                    assert!((32..=48).contains(&img.height()), "{}", img.height());
                }
            }
            row += 1;
        }
    }
    assert_eq!(row, 40);
    // Sorted like the real file: all cats, then all dogs.
    assert_eq!((0..40).filter(|&r| catsdogs_label(r, 40) == 0).count(), 20);
    // Deterministic.
    assert_eq!(catsdogs_parquet(40, 1, &[3], &[5, 30]), shard0);
    assert_ne!(catsdogs_parquet(40, 2, &[3], &[5, 30]), shard0);
}

#[test]
fn missing_repo_and_missing_file_are_errors() {
    let (repo, _, _) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo]);
    let cache = scratch_dir("fake-hub-missing");
    let client = client(&hub, &cache, None);

    let nobody = client.dataset("nobody", "nothing");
    let err = nobody.download_file().filename(SHARD0).send().unwrap_err();
    // A 404 on the HEAD is reported as EntryNotFound whatever X-Error-Code says.
    assert!(matches!(err, HFError::EntryNotFound { .. }), "{err:?}");
    let err = nobody.info().send().unwrap_err();
    assert!(matches!(err, HFError::RepoNotFound { .. }), "{err:?}");
    assert!(!nobody.exists().send().unwrap());
    let err = nobody.list_tree().send().unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    let ds = client.dataset("microsoft", "cats_vs_dogs");
    let err = ds
        .download_file()
        .filename("data/nope.parquet")
        .send()
        .unwrap_err();
    assert!(matches!(err, HFError::EntryNotFound { .. }), "{err:?}");
    // The 404 carried X-Repo-Commit, so hf-hub cached a negative entry: offline lookups of
    // the same file now say EntryNotFound without asking the server.
    let (offline, offline_requests, _) = delta(&hub, || {
        ds.download_file()
            .filename("data/nope.parquet")
            .local_files_only(true)
            .send()
    });
    assert!(
        matches!(offline, Err(HFError::EntryNotFound { .. })),
        "{offline:?}"
    );
    assert_eq!(offline_requests, 0);

    let err = ds.info().revision("v9").send().unwrap_err();
    assert!(matches!(err, HFError::RevisionNotFound { .. }), "{err:?}");
    assert_eq!(hub.file_downloads(), 0);
}

#[test]
fn gated_repo_needs_the_token() {
    let (repo, shard0, _) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo.gated("hf_fake_secret")]);

    let anonymous = client(&hub, &scratch_dir("fake-hub-gated-anon"), None);
    let ds = anonymous.dataset("microsoft", "cats_vs_dogs");
    let err = ds.download_file().filename(SHARD0).send().unwrap_err();
    let HFError::AuthRequired { context } = &err else {
        panic!("expected AuthRequired, got {err:?}");
    };
    assert_eq!(context.status.as_u16(), 401);
    assert_eq!(context.error_code.as_deref(), Some("GatedRepo"));
    let message = err.to_string().to_lowercase();
    assert!(message.contains("authentication required"), "{message}");
    assert!(matches!(
        ds.info().send(),
        Err(HFError::AuthRequired { .. })
    ));
    let wrong = client(&hub, &scratch_dir("fake-hub-gated-wrong"), Some("hf_wrong"));
    assert!(matches!(
        wrong
            .dataset("microsoft", "cats_vs_dogs")
            .download_file()
            .filename(SHARD0)
            .send(),
        Err(HFError::AuthRequired { .. })
    ));
    assert_eq!(hub.file_downloads(), 0);

    let authed = client(
        &hub,
        &scratch_dir("fake-hub-gated-token"),
        Some("hf_fake_secret"),
    );
    let path = authed
        .dataset("microsoft", "cats_vs_dogs")
        .download_file()
        .filename(SHARD0)
        .send()
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), shard0);
    assert_eq!(hub.file_downloads(), 1);
}

#[test]
fn snapshot_download_with_allow_patterns() {
    let (repo, shard0, shard1) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo]);
    let cache = scratch_dir("fake-hub-snapshot");
    let client = client(&hub, &cache, None);
    let ds = client.dataset("microsoft", "cats_vs_dogs");

    let (dir, first_requests, first_downloads) = delta(&hub, || {
        ds.snapshot_download()
            .allow_patterns(vec!["data/train-*".into()])
            .send()
            .unwrap()
    });
    assert!(dir.ends_with(format!("snapshots/{SHA}")), "{dir:?}");
    assert_eq!(std::fs::read(dir.join(SHARD0)).unwrap(), shard0);
    assert_eq!(std::fs::read(dir.join(SHARD1)).unwrap(), shard1);
    assert!(!dir.join("README.md").exists());
    assert!(!dir.join(ODD_NAME).exists());
    assert_eq!(first_downloads, 2);
    let first_log = hub.request_log();

    let (again, second_requests, second_downloads) = delta(&hub, || {
        ds.snapshot_download()
            .allow_patterns(vec!["data/train-*".into()])
            .send()
            .unwrap()
    });
    assert_eq!(again, dir);
    assert_eq!(second_downloads, 0);

    let (offline, offline_requests, _) = delta(&hub, || {
        ds.snapshot_download()
            .allow_patterns(vec!["data/train-*".into()])
            .local_files_only(true)
            .send()
            .unwrap()
    });
    assert_eq!(offline, dir);
    assert_eq!(offline_requests, 0);

    // The local file is a relative symlink into blobs/, named by the sha256 ETag.
    let target = std::fs::read_link(dir.join(SHARD0)).unwrap();
    assert!(target.ends_with(sha256_hex(&shard0)), "{target:?}");

    println!(
        "snapshot: first {first_requests} requests ({first_downloads} GETs), second \
         {second_requests} ({second_downloads} GETs), local_files_only {offline_requests}"
    );
    println!("first snapshot log: {first_log:#?}");
}

#[test]
fn tree_listing_paginates_with_link_headers() {
    let (repo, _, _) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo]);
    hub.set_tree_page_size(2);
    let client = client(&hub, &scratch_dir("fake-hub-pages"), None);
    let (tree, requests, _) = delta(&hub, || {
        client
            .dataset("microsoft", "cats_vs_dogs")
            .list_tree()
            .recursive(true)
            .send()
            .unwrap()
    });
    assert_eq!(tree.len(), 6, "2 directories + 4 files");
    assert_eq!(requests, 3);
    let log = hub.request_log();
    assert!(log.iter().all(|l| l.contains("recursive=true")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("cursor=4")), "{log:#?}");
}

/// Sends `raw` on a fresh connection and returns everything the server answers until it
/// closes (or 2 s pass).
fn raw_exchange(hub: &FakeHub, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(hub.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn raw_http_keep_alive_head_range_and_malformed_requests() {
    let (repo, _, _) = catsdogs_repo();
    let hub = FakeHub::start(vec![repo]);
    let readme = "/datasets/microsoft/cats_vs_dogs/resolve/main/README.md";

    // Three pipelined requests on one keep-alive connection; the last one closes it.
    let answer = raw_exchange(
        &hub,
        format!(
            "HEAD {readme} HTTP/1.1\r\nHost: x\r\n\r\n\
             GET {readme} HTTP/1.1\r\nHost: x\r\nRange: bytes=4-10\r\n\r\n\
             GET {readme} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let responses: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 3, "{answer}");
    assert!(responses[0].starts_with("200"), "{answer}");
    assert!(
        responses[0].contains(&format!("Content-Length: {}\r\n", README.len())),
        "{answer}"
    );
    assert!(
        responses[0].contains(&format!("X-Repo-Commit: {SHA}")),
        "{answer}"
    );
    assert!(
        responses[0].contains(&format!("ETag: \"{}\"", sha256_hex(README.as_bytes()))),
        "{answer}"
    );
    assert!(
        responses[0].ends_with("\r\n\r\n"),
        "HEAD has no body: {answer}"
    );
    assert!(responses[1].starts_with("206"), "{answer}");
    assert!(
        responses[1].contains(&format!("Content-Range: bytes 4-10/{}", README.len())),
        "{answer}"
    );
    assert!(responses[1].ends_with(&README[4..=10]), "{answer}");
    assert!(responses[2].starts_with("200"), "{answer}");
    assert!(responses[2].ends_with(README), "{answer}");
    assert_eq!(hub.file_downloads(), 2);

    // Unsatisfiable range.
    let answer = raw_exchange(
        &hub,
        format!("GET {readme} HTTP/1.1\r\nRange: bytes=9999-\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 416"), "{answer}");

    // Unknown repo / file: Hub-style error codes.
    let answer = raw_exchange(
        &hub,
        b"GET /api/datasets/a/b HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("X-Error-Code: RepoNotFound"), "{answer}");
    assert!(
        answer.ends_with(r#"{"error":"Repository not found"}"#),
        "{answer}"
    );
    let answer = raw_exchange(
        &hub,
        b"HEAD /datasets/microsoft/cats_vs_dogs/resolve/main/nope HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("X-Error-Code: EntryNotFound"), "{answer}");

    // Malformed input: 400, and the server keeps serving.
    for garbage in [
        &b"\x00\xff\xfe garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /x%zz HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /api/datasets/microsoft/cats_vs_dogs/paths-info/main HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ] {
        let answer = raw_exchange(&hub, garbage);
        assert!(answer.starts_with("HTTP/1.1 400"), "{garbage:?} → {answer}");
    }
    let oversized = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000));
    let answer = raw_exchange(&hub, oversized.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A client that disconnects mid-request is not an error.
    {
        let mut stream = TcpStream::connect(hub.addr()).unwrap();
        stream.write_all(b"GET /api/data").unwrap();
    }

    let client = client(&hub, &scratch_dir("fake-hub-raw"), None);
    let info = client
        .dataset("microsoft", "cats_vs_dogs")
        .info()
        .send()
        .unwrap();
    assert_eq!(info.sha.as_deref(), Some(SHA));
    let paths = client
        .dataset("microsoft", "cats_vs_dogs")
        .get_paths_info()
        .paths(vec![SHARD0.into(), "data".into(), "nope".into()])
        .send()
        .unwrap();
    assert_eq!(paths.len(), 2);
}
