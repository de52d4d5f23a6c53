//! `/v1/conductors` (1.49+): the conductors this database knows, alive while their heartbeat is
//! fresh.

use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::QueryParams;
use super::links::Base;
use super::version::Version;
use super::views::timestamp;
use crate::model::HardwareType;
use crate::store::ConductorRecord;

const SUMMARY: &[&str] = &["hostname", "conductor_group", "alive"];
const ALL: &[&str] = &[
    "hostname",
    "conductor_group",
    "alive",
    "drivers",
    "created_at",
    "updated_at",
];

fn gate(version: Version) -> Result<(), ApiError> {
    if version < Version(49) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    Ok(())
}

fn conductor_json(st: &AppState, c: &ConductorRecord, fields: &[&str], base: &str) -> Value {
    let alive = c.alive(
        chrono::Utc::now(),
        st.conductor.settings().heartbeat_timeout,
    );
    let mut m = Map::new();
    for f in fields {
        let v = match *f {
            "hostname" => json!(c.hostname),
            "conductor_group" => json!(c.conductor_group),
            "alive" => json!(alive),
            "drivers" => json!(HardwareType::names()),
            "created_at" => timestamp(&c.created_at),
            "updated_at" => timestamp(&c.updated_at),
            _ => Value::Null,
        };
        m.insert(f.to_string(), v);
    }
    let h = &c.hostname;
    m.insert(
        "links".into(),
        json!([
            {"href": format!("{base}/v1/conductors/{h}"), "rel": "self"},
            {"href": format!("{base}/conductors/{h}"), "rel": "bookmark"},
        ]),
    );
    Value::Object(m)
}

fn parse_fields(raw: Option<String>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let fields = super::views::field_names(&raw);
    if let Some(bad) = fields.iter().find(|f| !ALL.contains(&f.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Field {bad} is not a valid field."
        )));
    }
    Ok(Some(fields))
}

pub async fn list(
    State(st): State<AppState>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    gate(version)?;
    q.only(&[
        "detail", "fields", "limit", "marker", "sort_key", "sort_dir",
    ])?;
    let detail = q.bool("detail")?.unwrap_or(false);
    let fields = parse_fields(q.fields())?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    let owned: Vec<&str> = fields
        .as_ref()
        .map(|f| f.iter().map(String::as_str).collect())
        .unwrap_or_else(|| {
            if detail {
                ALL.to_vec()
            } else {
                SUMMARY.to_vec()
            }
        });
    match q.get("sort_key") {
        None | Some("id" | "hostname" | "created_at" | "updated_at" | "conductor_group") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "The sort_key value \"{k}\" is an invalid field for sorting"
            )));
        }
    }
    let limit = q.limit(st.max_limit)? as usize;
    let mut all = st.store.list_conductors().await?;
    if q.get("sort_dir") == Some("desc") {
        all.reverse();
    }
    if let Some(m) = q.get("marker") {
        let after = all
            .iter()
            .position(|c| c.hostname == m)
            .map_or(0, |i| i + 1);
        all.drain(..after);
    }
    all.truncate(limit);
    let docs: Vec<Value> = all
        .iter()
        .map(|c| conductor_json(&st, c, &owned, &base))
        .collect();
    let mut body = json!({ "conductors": docs });
    if all.len() == limit
        && let Some(last) = all.last()
    {
        body["next"] = json!(format!(
            "{base}/v1/conductors?sort_key={}&sort_dir={}&fields={}&limit={limit}&marker={}",
            q.get("sort_key").unwrap_or("id"),
            q.get("sort_dir").unwrap_or("asc"),
            owned.join(","),
            last.hostname
        ));
    }
    Ok(axum::Json(body))
}

pub async fn show(
    State(st): State<AppState>,
    Path(host): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    gate(version)?;
    q.only(&["fields"])?;
    let fields = parse_fields(q.fields())?;
    let owned: Vec<&str> = fields
        .as_ref()
        .map(|f| f.iter().map(String::as_str).collect())
        .unwrap_or_else(|| ALL.to_vec());
    let all = st.store.list_conductors().await?;
    let c = all
        .iter()
        .find(|c| c.hostname == host)
        .ok_or_else(|| ApiError::not_found(format!("Conductor {host} could not be found.")))?;
    Ok(axum::Json(conductor_json(&st, c, &owned, &base)))
}
