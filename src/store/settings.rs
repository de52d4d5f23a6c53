//! `[database]`: which database holds nodes, ports and conductors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::settings::SettingError;

/// `[database]` as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://<path>`; default `sqlite://<data_dir>/ironboot.sqlite`.
    pub url: Option<String>,
}

/// The database the service opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded default: one file, one process.
    Sqlite { path: PathBuf },
    /// Shared by several conductors (`postgres://` or `postgresql://`).
    Postgres { url: String },
}

impl DatabaseSettings {
    /// The URL in effect (the default lives in `data_dir`) and the database it names.
    pub fn resolve(&self, data_dir: &Path) -> Result<(String, Database), SettingError> {
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("ironboot.sqlite").display()));
        match url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => {
                let path = PathBuf::from(p);
                Ok((url, Database::Sqlite { path }))
            }
            _ if is_postgres(&url) => {
                let bad = |reason: String| {
                    SettingError::new("database.url", mask_password(&url), &reason)
                };
                let options: sqlx::postgres::PgConnectOptions = url
                    .parse()
                    .map_err(|e| bad(format!("not a PostgreSQL URL: {e}")))?;
                if options.get_host().is_empty() {
                    return Err(bad("names no host".into()));
                }
                Ok((url.clone(), Database::Postgres { url }))
            }
            _ => Err(SettingError::new(
                "database.url",
                mask_password(&url),
                "expected sqlite://<path> (one conductor) or \
                 postgres://<user>:<password>@<host>[:<port>]/<database> (several)",
            )),
        }
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A database URL with its password (in the authority or as a `password=` parameter)
/// replaced by `******`, for messages and `config show`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let mut masked = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:******{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    if let Some(q) = masked.find('?') {
        let params: Vec<String> = masked[q + 1..]
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=******"),
                _ => p.to_string(),
            })
            .collect();
        masked = format!("{}?{}", &masked[..q], params.join("&"));
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(
            mask_password("postgres://ironboot:s3cr@t@db.example:5432/ironboot"),
            "postgres://ironboot:******@db.example:5432/ironboot"
        );
        assert_eq!(
            mask_password("postgresql://ironboot@db/ironboot"),
            "postgresql://ironboot@db/ironboot"
        );
        assert_eq!(
            mask_password("postgres://db/x?user=a&password=b&sslmode=disable"),
            "postgres://db/x?user=a&password=******&sslmode=disable"
        );
    }

    #[test]
    fn urls_choose_the_database() {
        let dir = Path::new("/srv/ib");
        let s = |url: &str| DatabaseSettings {
            url: Some(url.into()),
        };
        assert_eq!(
            DatabaseSettings::default().resolve(dir).unwrap().1,
            Database::Sqlite {
                path: "/srv/ib/ironboot.sqlite".into()
            }
        );
        assert_eq!(
            s("postgresql://ib:pw@db:5433/ironboot")
                .resolve(dir)
                .unwrap()
                .1,
            Database::Postgres {
                url: "postgresql://ib:pw@db:5433/ironboot".into()
            }
        );
        let e = s("mysql://ib:pw@db/ironboot")
            .resolve(dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://") && !e.contains("pw@"), "{e}");
        let e = s("postgres://ib:pw@db:notaport/x")
            .resolve(dir)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a PostgreSQL URL") && !e.contains(":pw"),
            "{e}"
        );
    }
}
