//! A tiny grpc.health.v1 server for the gRPC probe e2e test (not part of the kubelet):
//! `grpc_health_server <port>` reports SERVING for the overall service "" and NOT_SERVING for
//! the service "down".

use tonic_health::ServingStatus;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9090);
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    reporter.set_service_status("down", ServingStatus::NotServing).await;
    println!("grpc health server on :{port}");
    tonic::transport::Server::builder().add_service(service).serve(([0, 0, 0, 0], port).into()).await?;
    Ok(())
}
