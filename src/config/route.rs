//! `[[upstream]]` as a list and `[[route]]`: several called AE titles on one
//! DIMSE port, each to its own archive.

use super::UpstreamConfig;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The name of a single `[upstream]`; its spool is `spool.dir` itself.
pub const DEFAULT_UPSTREAM: &str = "default";

pub fn default_upstream_name() -> String {
    DEFAULT_UPSTREAM.to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The AE title a modality calls.
    pub called_ae: String,
    /// The `[[upstream]]` name.
    pub upstream: String,
    /// C-STORE only: this route takes an instance only when each condition
    /// given holds (any of its values). A route without conditions takes
    /// every C-STORE, and the first such route of a called AE also answers
    /// its C-FIND, C-MOVE, C-GET and worklist queries.
    #[serde(default)]
    pub calling_ae: Vec<String>,
    #[serde(default)]
    pub modality: Vec<String>,
    #[serde(default)]
    pub sop_class: Vec<String>,
}

impl RouteConfig {
    pub fn is_conditional(&self) -> bool {
        !(self.calling_ae.is_empty() && self.modality.is_empty() && self.sop_class.is_empty())
    }
}

/// `[upstream]` (one table) or `[[upstream]]` (a list of them).
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UpstreamConfig>, D::Error> {
    struct OneOrMany;
    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<UpstreamConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an [upstream] table or [[upstream]] tables")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let one = UpstreamConfig::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(vec![one])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(OneOrMany)
}
