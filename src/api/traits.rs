//! `/v1/nodes/{ident}/traits` (1.37+): list, replace all, add one, remove one or all.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::links::Base;
use super::nodes::node_ident;
use super::version::Version;

/// Most traits a node may carry (Ironic's limit).
const MAX_TRAITS: usize = 50;

/// A trait name: `CUSTOM_` plus upper-case letters, digits and `_`, or a standard name of the
/// same alphabet (ironboot does not ship the os-traits catalogue, so it cannot tell a standard
/// name from a misspelt one).
fn check_trait(t: &str) -> Result<(), ApiError> {
    let ok = !t.is_empty()
        && t.len() <= 255
        && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && (!t.starts_with("CUSTOM_") || t.len() > "CUSTOM_".len());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid trait: '{t}': a trait is CUSTOM_ followed by upper-case letters, digits and \
             underscores, or a standard trait"
        )))
    }
}

fn gate(version: Version) -> Result<(), ApiError> {
    if version < Version(37) {
        return Err(ApiError::not_acceptable());
    }
    Ok(())
}

pub async fn list(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<axum::Json<Value>, ApiError> {
    gate(version)?;
    let node = st.store.get_node(&node_ident(&ident, version)?).await?;
    let mut traits = node.traits;
    traits.sort();
    Ok(axum::Json(json!({ "traits": traits })))
}

/// Changes the node's traits under its reservation.
async fn change(
    st: &AppState,
    ident: &str,
    version: Version,
    f: impl FnOnce(&mut Vec<String>) -> Result<(), ApiError> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    gate(version)?;
    let ident = node_ident(ident, version)?;
    st.conductor
        .with_reserved(&ident, |mut task| async move {
            let result = async {
                let mut traits = task.node.traits.clone();
                f(&mut traits)?;
                if traits.len() > MAX_TRAITS {
                    return Err(ApiError::bad_request(format!(
                        "Could not modify traits for node {}: would exceed the maximum of \
                         {MAX_TRAITS} traits",
                        task.node.uuid
                    )));
                }
                task.node.traits = traits;
                task.save().await.map_err(ApiError::from)
            }
            .await;
            (task, result)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /traits` with `{"traits": [...]}`: replaces every trait.
pub async fn set_all(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let list = match doc.as_object() {
        Some(m) if m.len() == 1 && m.contains_key("traits") => m["traits"].clone(),
        _ => {
            return Err(ApiError::bad_request(
                "Schema error for traits: a body {\"traits\": [...]} is required",
            ));
        }
    };
    let Some(items) = list.as_array() else {
        return Err(ApiError::bad_request(format!(
            "Schema error for traits: {list} is not of type 'array'"
        )));
    };
    let mut traits = Vec::new();
    for t in items {
        let t = t
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("Invalid trait: {t}")))?;
        check_trait(t)?;
        if !traits.iter().any(|x: &String| x == t) {
            traits.push(t.to_string());
        }
    }
    change(&st, &ident, version, move |all| {
        *all = traits;
        Ok(())
    })
    .await
}

/// `PUT /traits/{trait}`: adds one (no body).
pub async fn add(
    State(st): State<AppState>,
    Path((ident, name)): Path<(String, String)>,
    version: Version,
    Base(base): Base,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if !body.is_empty() {
        return Err(ApiError::bad_request(
            "No body is accepted when adding a single trait",
        ));
    }
    check_trait(&name)?;
    let node = st.store.get_node(&node_ident(&ident, version)?).await?;
    let location = format!("{base}/v1/nodes/{}/traits/{name}", node.uuid);
    let status = change(&st, &ident, version, move |all| {
        if !all.contains(&name) {
            all.push(name);
        }
        Ok(())
    })
    .await?;
    Ok((status, [(header::LOCATION, location)]).into_response())
}

pub async fn remove_all(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    change(&st, &ident, version, |all| {
        all.clear();
        Ok(())
    })
    .await
}

pub async fn remove(
    State(st): State<AppState>,
    Path((ident, name)): Path<(String, String)>,
    version: Version,
) -> Result<StatusCode, ApiError> {
    change(&st, &ident, version, move |all| {
        let before = all.len();
        all.retain(|t| *t != name);
        if all.len() == before {
            return Err(ApiError::not_found(format!(
                "Trait {name} could not be found."
            )));
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trait_names() {
        for good in ["CUSTOM_GOLD", "HW_CPU_X86_AVX2", "CUSTOM_1"] {
            check_trait(good).unwrap();
        }
        for bad in ["", "lower_case", "not-a-trait", "CUSTOM_", "_X"] {
            assert!(check_trait(bad).is_err(), "{bad:?}");
        }
    }
}
