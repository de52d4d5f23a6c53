//! Ironic's provision state machine: states, events and the transitions between them.
//!
//! String values are Ironic's exactly (`wait call-back`, `deploy failed`, ...), because clients,
//! agents and operators match on them. The table is pure data; [`transition`] is the only way to
//! move a node, so an invalid move is always an error naming the state and the verb.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order (used by exhaustive tests and docs).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: stringify!($name), value: s.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A string that is not one of the known values of an enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

string_enum! {
    /// A node's provision state.
    ProvisionState {
        Enroll => "enroll",
        Verifying => "verifying",
        Manageable => "manageable",
        Available => "available",
        Active => "active",
        Deploying => "deploying",
        DeployWait => "wait call-back",
        DeployFailed => "deploy failed",
        DeployHold => "deploy hold",
        Deleting => "deleting",
        Error => "error",
        Cleaning => "cleaning",
        CleanWait => "clean wait",
        CleanFailed => "clean failed",
        CleanHold => "clean hold",
        Inspecting => "inspecting",
        InspectWait => "inspect wait",
        InspectFailed => "inspect failed",
        Adopting => "adopting",
        AdoptFailed => "adopt failed",
        Rescuing => "rescuing",
        RescueWait => "rescue wait",
        RescueFailed => "rescue failed",
        Rescue => "rescue",
        Unrescuing => "unrescuing",
        UnrescueFailed => "unrescue failed",
        Servicing => "servicing",
        ServiceWait => "service wait",
        ServiceFailed => "service failed",
        ServiceHold => "service hold",
    }
}

string_enum! {
    /// What can happen to a node. API verbs map to these through [`Event::from_verb`].
    Event {
        Manage => "manage",
        Provide => "provide",
        Deploy => "deploy",
        Rebuild => "rebuild",
        Delete => "delete",
        Clean => "clean",
        Inspect => "inspect",
        Adopt => "adopt",
        Rescue => "rescue",
        Unrescue => "unrescue",
        Service => "service",
        Abort => "abort",
        Fail => "fail",
        Wait => "wait",
        Resume => "resume",
        Done => "done",
        Hold => "hold",
        Unhold => "unhold",
    }
}

/// Events an API client may request by name (the `target` of `PUT .../states/provision`).
/// The others (`fail`, `wait`, `resume`, `done`, `hold`) are internal to the conductor.
pub const API_VERBS: &[&str] = &[
    "manage", "provide", "active", "deploy", "rebuild", "deleted", "undeploy", "abort", "clean",
    "inspect", "adopt", "rescue", "unrescue", "unhold", "service",
];

impl Event {
    /// Maps an API `target` verb to its event (`active`/`deploy` → deploy,
    /// `deleted`/`undeploy` → delete); `None` for anything else.
    pub fn from_verb(verb: &str) -> Option<Event> {
        Some(match verb {
            "active" | "deploy" => Event::Deploy,
            "deleted" | "undeploy" => Event::Delete,
            "manage" => Event::Manage,
            "provide" => Event::Provide,
            "rebuild" => Event::Rebuild,
            "abort" => Event::Abort,
            "clean" => Event::Clean,
            "inspect" => Event::Inspect,
            "adopt" => Event::Adopt,
            "rescue" => Event::Rescue,
            "unrescue" => Event::Unrescue,
            "unhold" => Event::Unhold,
            "service" => Event::Service,
            _ => return None,
        })
    }
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the requested action \"{event}\" can not be performed on a node in provision state \"{state}\""
)]
pub struct InvalidTransition {
    pub state: ProvisionState,
    pub event: Event,
}

/// The result of a transition: the new state and the target it is heading for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: ProvisionState,
    pub target: Option<ProvisionState>,
}

/// Applies `event` to a node in `from`.
///
/// Cleaning ends with `done` (to `available`) after provide/undeploy, or with `manage` (to
/// `manageable`) after manual cleaning; the conductor picks which.
pub fn transition(from: ProvisionState, event: Event) -> Result<Transition, InvalidTransition> {
    use Event as E;
    use ProvisionState as S;
    let to = match (from, event) {
        // Enroll and verification.
        (S::Enroll, E::Manage) => S::Verifying,
        (S::Verifying, E::Done) => S::Manageable,
        (S::Verifying, E::Fail) => S::Enroll,
        // Making nodes available.
        (S::Manageable, E::Provide) => S::Cleaning,
        (S::Manageable, E::Clean) => S::Cleaning,
        (S::Available, E::Manage) => S::Manageable,
        // Deploy.
        (S::Available, E::Deploy) => S::Deploying,
        (S::Active, E::Rebuild) => S::Deploying,
        (S::DeployFailed, E::Rebuild | E::Deploy) => S::Deploying,
        (S::Error, E::Rebuild) => S::Deploying,
        (S::Deploying, E::Wait) => S::DeployWait,
        (S::DeployWait, E::Resume) => S::Deploying,
        (S::Deploying, E::Done) => S::Active,
        (S::Deploying, E::Fail) => S::DeployFailed,
        (S::DeployWait, E::Fail | E::Abort) => S::DeployFailed,
        (S::Deploying | S::DeployWait, E::Hold) => S::DeployHold,
        (S::DeployHold, E::Unhold) => S::DeployWait,
        (S::DeployHold, E::Abort) => S::DeployFailed,
        // Tear down.
        (
            S::Active
            | S::DeployWait
            | S::DeployFailed
            | S::Error
            | S::Rescue
            | S::RescueWait
            | S::RescueFailed
            | S::UnrescueFailed
            | S::ServiceFailed
            | S::ServiceWait,
            E::Delete,
        ) => S::Deleting,
        (S::Deleting, E::Clean) => S::Cleaning,
        (S::Deleting, E::Fail) => S::Error,
        // Cleaning.
        (S::Cleaning, E::Wait) => S::CleanWait,
        (S::CleanWait, E::Resume) => S::Cleaning,
        (S::Cleaning, E::Done) => S::Available,
        (S::Cleaning, E::Manage) => S::Manageable,
        (S::Cleaning | S::CleanWait, E::Fail) => S::CleanFailed,
        (S::CleanWait, E::Abort) => S::CleanFailed,
        (S::Cleaning | S::CleanWait, E::Hold) => S::CleanHold,
        (S::CleanHold, E::Unhold) => S::CleanWait,
        (S::CleanHold, E::Abort) => S::CleanFailed,
        (S::CleanFailed, E::Manage) => S::Manageable,
        // Inspection.
        (S::Manageable, E::Inspect) => S::Inspecting,
        (S::InspectFailed, E::Inspect) => S::Inspecting,
        (S::InspectFailed, E::Manage) => S::Manageable,
        (S::Inspecting, E::Wait) => S::InspectWait,
        (S::InspectWait, E::Resume) => S::Inspecting,
        (S::Inspecting | S::InspectWait, E::Done) => S::Manageable,
        (S::Inspecting | S::InspectWait, E::Fail) => S::InspectFailed,
        (S::InspectWait, E::Abort) => S::InspectFailed,
        // Adoption.
        (S::Manageable, E::Adopt) => S::Adopting,
        (S::Adopting, E::Done) => S::Active,
        (S::Adopting, E::Fail) => S::AdoptFailed,
        (S::AdoptFailed, E::Adopt) => S::Adopting,
        (S::AdoptFailed, E::Manage) => S::Manageable,
        // Rescue.
        (S::Active | S::Rescue | S::RescueFailed | S::UnrescueFailed, E::Rescue) => S::Rescuing,
        (S::Rescuing, E::Wait) => S::RescueWait,
        (S::RescueWait, E::Resume) => S::Rescuing,
        (S::Rescuing, E::Done) => S::Rescue,
        (S::Rescuing | S::RescueWait, E::Fail) => S::RescueFailed,
        (S::RescueWait, E::Abort) => S::RescueFailed,
        (S::Rescue | S::RescueFailed | S::UnrescueFailed, E::Unrescue) => S::Unrescuing,
        (S::Unrescuing, E::Done) => S::Active,
        (S::Unrescuing, E::Fail) => S::UnrescueFailed,
        // Service.
        (S::Active, E::Service) => S::Servicing,
        (S::Servicing, E::Wait) => S::ServiceWait,
        (S::ServiceWait, E::Resume) => S::Servicing,
        (S::Servicing | S::ServiceWait, E::Done) => S::Active,
        (S::Servicing | S::ServiceWait, E::Fail) => S::ServiceFailed,
        (S::Servicing | S::ServiceWait, E::Hold) => S::ServiceHold,
        (S::ServiceHold, E::Unhold) => S::ServiceWait,
        (S::ServiceHold | S::ServiceWait, E::Abort) => S::ServiceFailed,
        (S::ServiceFailed, E::Abort) => S::Active,
        _ => return Err(InvalidTransition { state: from, event }),
    };
    Ok(Transition {
        to,
        target: target_of(to),
    })
}

/// The stable state a node in `state` is heading for (`target_provision_state`), if any.
pub fn target_of(state: ProvisionState) -> Option<ProvisionState> {
    use ProvisionState as S;
    match state {
        S::Deploying | S::DeployWait | S::DeployHold | S::Adopting | S::Unrescuing => {
            Some(S::Active)
        }
        S::Servicing | S::ServiceWait | S::ServiceHold => Some(S::Active),
        S::Cleaning | S::CleanWait | S::CleanHold | S::Deleting => Some(S::Available),
        S::Inspecting | S::InspectWait | S::Verifying => Some(S::Manageable),
        S::Rescuing | S::RescueWait => Some(S::Rescue),
        _ => None,
    }
}

impl ProvisionState {
    /// States in which the agent may look its node up (Ironic's `LOOKUP_ALLOWED_STATES`).
    pub fn lookup_allowed(self) -> bool {
        use ProvisionState as S;
        matches!(
            self,
            S::Deploying
                | S::DeployWait
                | S::Cleaning
                | S::CleanWait
                | S::Inspecting
                | S::InspectWait
                | S::Rescuing
                | S::RescueWait
                | S::ServiceWait
        )
    }

    /// States in which the node waits for an agent booted from the ramdisk its conductor
    /// prepared (what take over must prepare again).
    pub fn waits_for_agent(self) -> bool {
        use ProvisionState as S;
        matches!(
            self,
            S::DeployWait | S::CleanWait | S::InspectWait | S::RescueWait
        )
    }

    /// States in which the agent boots as the rescue ramdisk.
    pub fn is_rescuing(self) -> bool {
        matches!(self, ProvisionState::Rescuing | ProvisionState::RescueWait)
    }

    /// States in which heartbeats are accepted (Ironic's `HEARTBEAT_ALLOWED`).
    pub fn heartbeat_allowed(self) -> bool {
        use ProvisionState as S;
        matches!(
            self,
            S::DeployWait
                | S::CleanWait
                | S::RescueWait
                | S::Deploying
                | S::Cleaning
                | S::Rescuing
                | S::DeployHold
                | S::CleanHold
                | S::Servicing
                | S::ServiceWait
                | S::ServiceHold
        )
    }

    /// Failure states (Ironic's `FAILURE_STATES`).
    pub fn is_failure(self) -> bool {
        use ProvisionState as S;
        matches!(
            self,
            S::DeployFailed
                | S::CleanFailed
                | S::InspectFailed
                | S::RescueFailed
                | S::UnrescueFailed
                | S::AdoptFailed
                | S::ServiceFailed
        )
    }

    /// Transient states a conductor cannot resume after a restart; they are failed at start-up
    /// (Ironic's `STUCK_STATES_TREATED_AS_FAIL`).
    pub fn stuck_on_restart(self) -> bool {
        use ProvisionState as S;
        matches!(
            self,
            S::Deploying
                | S::Cleaning
                | S::Verifying
                | S::Inspecting
                | S::Adopting
                | S::Rescuing
                | S::Unrescuing
                | S::Deleting
                | S::Servicing
        )
    }

    /// A node in one of these states may be deleted through the API.
    pub fn deletable(self) -> bool {
        use ProvisionState as S;
        matches!(
            self,
            S::Enroll
                | S::Manageable
                | S::Available
                | S::Error
                | S::CleanFailed
                | S::InspectFailed
                | S::AdoptFailed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use ProvisionState as S;

    /// Every allowed (state, event) pair and where it leads. Anything not listed must fail.
    const ALLOWED: &[(S, E, S)] = &[
        (S::Enroll, E::Manage, S::Verifying),
        (S::Verifying, E::Done, S::Manageable),
        (S::Verifying, E::Fail, S::Enroll),
        (S::Manageable, E::Provide, S::Cleaning),
        (S::Manageable, E::Clean, S::Cleaning),
        (S::Manageable, E::Inspect, S::Inspecting),
        (S::Manageable, E::Adopt, S::Adopting),
        (S::Available, E::Manage, S::Manageable),
        (S::Available, E::Deploy, S::Deploying),
        (S::Active, E::Rebuild, S::Deploying),
        (S::Active, E::Delete, S::Deleting),
        (S::Active, E::Rescue, S::Rescuing),
        (S::Active, E::Service, S::Servicing),
        (S::DeployFailed, E::Rebuild, S::Deploying),
        (S::DeployFailed, E::Deploy, S::Deploying),
        (S::DeployFailed, E::Delete, S::Deleting),
        (S::Error, E::Rebuild, S::Deploying),
        (S::Error, E::Delete, S::Deleting),
        (S::Deploying, E::Wait, S::DeployWait),
        (S::Deploying, E::Done, S::Active),
        (S::Deploying, E::Fail, S::DeployFailed),
        (S::Deploying, E::Hold, S::DeployHold),
        (S::DeployWait, E::Resume, S::Deploying),
        (S::DeployWait, E::Fail, S::DeployFailed),
        (S::DeployWait, E::Abort, S::DeployFailed),
        (S::DeployWait, E::Hold, S::DeployHold),
        (S::DeployWait, E::Delete, S::Deleting),
        (S::DeployHold, E::Unhold, S::DeployWait),
        (S::DeployHold, E::Abort, S::DeployFailed),
        (S::Deleting, E::Clean, S::Cleaning),
        (S::Deleting, E::Fail, S::Error),
        (S::Cleaning, E::Wait, S::CleanWait),
        (S::Cleaning, E::Done, S::Available),
        (S::Cleaning, E::Manage, S::Manageable),
        (S::Cleaning, E::Fail, S::CleanFailed),
        (S::Cleaning, E::Hold, S::CleanHold),
        (S::CleanWait, E::Resume, S::Cleaning),
        (S::CleanWait, E::Fail, S::CleanFailed),
        (S::CleanWait, E::Abort, S::CleanFailed),
        (S::CleanWait, E::Hold, S::CleanHold),
        (S::CleanHold, E::Unhold, S::CleanWait),
        (S::CleanHold, E::Abort, S::CleanFailed),
        (S::CleanFailed, E::Manage, S::Manageable),
        (S::Inspecting, E::Wait, S::InspectWait),
        (S::Inspecting, E::Done, S::Manageable),
        (S::Inspecting, E::Fail, S::InspectFailed),
        (S::InspectWait, E::Resume, S::Inspecting),
        (S::InspectWait, E::Done, S::Manageable),
        (S::InspectWait, E::Fail, S::InspectFailed),
        (S::InspectWait, E::Abort, S::InspectFailed),
        (S::InspectFailed, E::Inspect, S::Inspecting),
        (S::InspectFailed, E::Manage, S::Manageable),
        (S::Adopting, E::Done, S::Active),
        (S::Adopting, E::Fail, S::AdoptFailed),
        (S::AdoptFailed, E::Adopt, S::Adopting),
        (S::AdoptFailed, E::Manage, S::Manageable),
        (S::Rescue, E::Rescue, S::Rescuing),
        (S::Rescue, E::Unrescue, S::Unrescuing),
        (S::Rescue, E::Delete, S::Deleting),
        (S::RescueFailed, E::Rescue, S::Rescuing),
        (S::RescueFailed, E::Unrescue, S::Unrescuing),
        (S::RescueFailed, E::Delete, S::Deleting),
        (S::UnrescueFailed, E::Rescue, S::Rescuing),
        (S::UnrescueFailed, E::Unrescue, S::Unrescuing),
        (S::UnrescueFailed, E::Delete, S::Deleting),
        (S::Rescuing, E::Wait, S::RescueWait),
        (S::Rescuing, E::Done, S::Rescue),
        (S::Rescuing, E::Fail, S::RescueFailed),
        (S::RescueWait, E::Resume, S::Rescuing),
        (S::RescueWait, E::Fail, S::RescueFailed),
        (S::RescueWait, E::Abort, S::RescueFailed),
        (S::RescueWait, E::Delete, S::Deleting),
        (S::Unrescuing, E::Done, S::Active),
        (S::Unrescuing, E::Fail, S::UnrescueFailed),
        (S::Servicing, E::Wait, S::ServiceWait),
        (S::Servicing, E::Done, S::Active),
        (S::Servicing, E::Fail, S::ServiceFailed),
        (S::Servicing, E::Hold, S::ServiceHold),
        (S::ServiceWait, E::Resume, S::Servicing),
        (S::ServiceWait, E::Done, S::Active),
        (S::ServiceWait, E::Fail, S::ServiceFailed),
        (S::ServiceWait, E::Hold, S::ServiceHold),
        (S::ServiceWait, E::Abort, S::ServiceFailed),
        (S::ServiceWait, E::Delete, S::Deleting),
        (S::ServiceHold, E::Unhold, S::ServiceWait),
        (S::ServiceHold, E::Abort, S::ServiceFailed),
        (S::ServiceFailed, E::Abort, S::Active),
        (S::ServiceFailed, E::Delete, S::Deleting),
    ];

    #[test]
    fn every_state_times_every_event() {
        let mut checked = 0;
        for &state in S::ALL {
            for &event in E::ALL {
                let expected = ALLOWED
                    .iter()
                    .find(|(s, e, _)| *s == state && *e == event)
                    .map(|t| t.2);
                match (transition(state, event), expected) {
                    (Ok(t), Some(to)) => assert_eq!(t.to, to, "{state} --{event}-->"),
                    (Err(err), None) => {
                        assert_eq!(err, InvalidTransition { state, event });
                        let msg = err.to_string();
                        assert!(
                            msg.contains(state.as_str()) && msg.contains(event.as_str()),
                            "{msg}"
                        );
                    }
                    (got, want) => panic!("{state} --{event}--> got {got:?}, table says {want:?}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, S::ALL.len() * E::ALL.len());
    }

    #[test]
    fn strings_round_trip_and_match_ironic() {
        for &s in S::ALL {
            assert_eq!(s.as_str().parse::<S>().unwrap(), s);
        }
        for &e in E::ALL {
            assert_eq!(e.as_str().parse::<E>().unwrap(), e);
        }
        assert_eq!(S::DeployWait.as_str(), "wait call-back");
        assert_eq!(S::DeployFailed.as_str(), "deploy failed");
        assert_eq!(S::CleanWait.as_str(), "clean wait");
        assert!("wait-callback".parse::<S>().is_err());
        assert_eq!(
            serde_json::to_string(&S::DeployWait).unwrap(),
            "\"wait call-back\""
        );
    }

    #[test]
    fn api_verbs_map_to_events() {
        assert_eq!(Event::from_verb("active"), Some(E::Deploy));
        assert_eq!(Event::from_verb("deploy"), Some(E::Deploy));
        assert_eq!(Event::from_verb("deleted"), Some(E::Delete));
        assert_eq!(Event::from_verb("undeploy"), Some(E::Delete));
        assert_eq!(Event::from_verb("done"), None);
        assert_eq!(Event::from_verb("fail"), None);
        for verb in API_VERBS {
            assert!(Event::from_verb(verb).is_some(), "{verb}");
        }
    }

    #[test]
    fn targets_follow_the_flow() {
        assert_eq!(
            transition(S::Available, E::Deploy).unwrap().target,
            Some(S::Active)
        );
        assert_eq!(transition(S::Deploying, E::Done).unwrap().target, None);
        assert_eq!(
            transition(S::Active, E::Delete).unwrap().target,
            Some(S::Available)
        );
        assert_eq!(
            transition(S::Manageable, E::Inspect).unwrap().target,
            Some(S::Manageable)
        );
        assert!(S::DeployWait.lookup_allowed() && !S::Active.lookup_allowed());
        assert!(S::DeployFailed.is_failure() && !S::Active.is_failure());
    }
}
