//! `GET /`: the upload page, embedded in the binary (no build step, no files at run time).

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../../assets/index.html");

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}
