//! Plugin manifests: the `NAME.toml` beside `NAME.wasm` in the plugin folder, and
//! `[[plugin]]` entries in the main config. Which manifests make up the plugin set, and how
//! they are admitted together, is [`crate::catalog`]'s job.
//!
//! By job: [`raw`](RawPlugin) is a manifest as written; [`validate_plugin`] is the one
//! validation both kinds go through; the `[plugins]` ceilings ([`PluginCaps`]) hold every
//! manifest alike; a sidecar is named by its files ([`parse_sidecar`]); [`PluginSpec`] is the
//! result; [`Origin`] is an allow-listed origin of outgoing HTTP.

mod caps;
mod origin;
mod raw;
mod sidecar;
mod spec;
mod validate;

pub use caps::PluginCaps;
pub use origin::Origin;
pub use raw::{RawCapabilities, RawLimits, RawPlugin, RawRetry};
pub(crate) use sidecar::load_sidecar_with;
pub use sidecar::{load_sidecar, parse_sidecar, parse_sidecar_with};
pub use spec::{Capabilities, KV_MAX_KEY_BYTES, Limits, PluginSpec, RetryPolicy};
pub use validate::valid_name;
pub(crate) use validate::{Identity, ManifestText, validate_plugin};
