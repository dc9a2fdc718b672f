//! The SDK against our standalone volume server with weed's JWT keys (`security.toml`
//! with a write and a read key): uploads carry the assign's token, and reads, stats and
//! deletes, refused (401) without a token, get the file's token from the master's
//! `/dir/lookup?fileId=` and succeed.

mod common;

use client_sdk::{Client, Error, UploadOptions};
use testbeds::ours::OurVolumeServer;
use testbeds::ours::volume_server_binary;
use testbeds::pseudo_random;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_read_stat_and_delete_work_when_the_cluster_signs_everything() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("security.toml");
    std::fs::write(
        &config,
        "[jwt.signing]\nkey = \"sdk-write\"\nexpires_after_seconds = 60\n\
         [jwt.signing.read]\nkey = \"sdk-read\"\nexpires_after_seconds = 60\n",
    )
    .unwrap();
    let server = OurVolumeServer::start(
        &volume_server_binary(),
        &root.path().join("data"),
        &["--security-config", config.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let data = pseudo_random(200_000, 5);

    for client in [
        Client::builder(server.addr()).build().unwrap(),
        Client::builder_for_volume_server(server.addr()).build().unwrap(),
    ] {
        let uploaded = client.upload(data.clone(), &UploadOptions::named("secret.bin")).await.unwrap();
        let fid = uploaded.fid;
        // The server really refuses a request without the token.
        let raw = reqwest::get(format!("http://{}/{fid}", server.addr())).await.unwrap();
        assert_eq!(raw.status().as_u16(), 401);

        assert_eq!(&client.download(&fid).await.unwrap()[..], &data[..]);
        assert_eq!(&client.read_range(&fid, 1000..1100).await.unwrap()[..], &data[1000..1100]);
        let mut stream = client.download_stream(&fid).await.unwrap();
        let mut streamed = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            streamed.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(streamed, data);
        assert_eq!(client.stat(&fid).await.unwrap().stored_size, data.len() as u64);
        client.delete(&fid).await.unwrap();
        assert!(matches!(client.download(&fid).await, Err(Error::NotFound { .. })));
    }
    server.stop();
}
