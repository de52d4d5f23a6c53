//! `/v1/drivers`: the hardware types this conductor serves.

use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::links::Base;
use crate::model::HardwareType;

pub async fn list(State(st): State<AppState>, Base(base): Base) -> axum::Json<Value> {
    let drivers: Vec<Value> = HardwareType::names()
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "hosts": [st.conductor.host()],
                "type": "dynamic",
                "links": [{"href": format!("{base}/v1/drivers/{name}"), "rel": "self"}],
            })
        })
        .collect();
    axum::Json(json!({ "drivers": drivers }))
}
