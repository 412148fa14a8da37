//! Routes: which plugin handles which topic (`topic=plugin`), and what each route lets its
//! plugin do beyond stock adjustments (keyed state, topics to emit to); the ingest flow
//! consumes these topics.

use std::collections::{BTreeMap, HashMap};

use super::output::Allowances;
use super::tables::{TableGrant, TableOps};

/// `topic=plugin` pairs, one plugin per topic, with each route's allowances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes(Vec<(String, String)>, HashMap<String, Allowances>);

impl Routes {
    /// Later pairs for the same topic replace earlier ones.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut routes: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (topic, plugin) in pairs {
            routes.retain(|(t, _)| *t != topic);
            routes.push((topic, plugin));
        }
        Self(routes, HashMap::new())
    }

    /// The one route `topic=plugin`.
    pub fn single(topic: &str, plugin: &str) -> Self {
        Self::new(vec![(topic.to_string(), plugin.to_string())])
    }

    /// Let the routes of `state` topics keep keyed state, and the route of each `emit` pair's
    /// topic emit to its second part (a topic, or a prefix ending in `*`). A topic that is
    /// not routed is an error naming it.
    pub fn allow(mut self, state: &[String], emit: &[(String, String)]) -> Result<Self, String> {
        let routed = |topic: &str| {
            if self.plugin_for(topic).is_none() {
                return Err(format!(
                    "`{topic}` has no route (routes: {self}); state and emit are per route"
                ));
            }
            Ok(topic.to_string())
        };
        let mut allowances = HashMap::<String, Allowances>::new();
        for topic in state {
            allowances.entry(routed(topic)?).or_default().state = true;
        }
        for (topic, allowed) in emit {
            if allowed.is_empty() || allowed.contains(',') {
                return Err(format!(
                    "emit `{topic}={allowed}`: name one topic or prefix*"
                ));
            }
            allowances
                .entry(routed(topic)?)
                .or_default()
                .emit_to
                .push(allowed.clone());
        }
        self.1 = allowances;
        Ok(self)
    }

    /// Let the route of each pair's topic write its table: `TABLE` (every kind of write) or
    /// `TABLE:OPS` (`upsert+delete+add`, any of them). A topic that is not routed, a table
    /// declared twice for one route, or unknown ops are errors naming them.
    pub fn allow_tables(mut self, tables: &[(String, String)]) -> Result<Self, String> {
        for (topic, declared) in tables {
            if self.plugin_for(topic).is_none() {
                return Err(format!(
                    "`{topic}` has no route (routes: {self}); tables are per route"
                ));
            }
            let (name, ops) = match declared.split_once(':') {
                Some((name, ops)) => (name.trim(), TableOps::parse(ops)?),
                None => (declared.trim(), TableOps::ALL),
            };
            if name.is_empty() {
                return Err(format!("table `{topic}={declared}`: name a table"));
            }
            let allowed = self.1.entry(topic.clone()).or_default();
            if allowed.tables.iter().any(|t| t.name == name) {
                return Err(format!("table {name} is declared twice for {topic}"));
            }
            allowed.tables.push(TableGrant {
                name: name.to_string(),
                ops,
                shape: None,
            });
        }
        Ok(self)
    }

    /// Every table some route declares, with every write some route may make to it.
    pub fn declared_tables(&self) -> BTreeMap<String, TableOps> {
        let mut declared: BTreeMap<String, TableOps> = BTreeMap::new();
        for grant in self.1.values().flat_map(|a| &a.tables) {
            let ops = declared.entry(grant.name.clone()).or_insert(TableOps::NONE);
            *ops = ops.union(grant.ops);
        }
        declared
    }

    /// What the route of `topic` lets its plugin do beyond stock adjustments.
    pub fn allowances(&self, topic: &str) -> Allowances {
        self.1.get(topic).cloned().unwrap_or_default()
    }

    /// The plugin that handles `topic`.
    pub fn plugin_for(&self, topic: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, plugin)| plugin.as_str())
    }

    /// The topics ingest consumes.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(topic, _)| topic.as_str())
    }

    /// The topics `plugin` handles.
    pub fn topics_of(&self, plugin: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, p)| p == plugin)
            .map(|(topic, _)| topic.clone())
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(t, p)| (t.as_str(), p.as_str()))
    }
}

impl std::fmt::Display for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(t, p)| {
                let allowed = self.allowances(t);
                let mut extras = Vec::new();
                if allowed.state {
                    extras.push("state".to_string());
                }
                extras.extend(allowed.emit_to.iter().map(|e| format!("emit {e}")));
                extras.extend(
                    allowed
                        .tables
                        .iter()
                        .map(|t| format!("table {} {}", t.name, t.ops)),
                );
                if extras.is_empty() {
                    format!("{t}={p}")
                } else {
                    format!("{t}={p} ({})", extras.join(", "))
                }
            })
            .collect();
        f.write_str(&pairs.join(","))
    }
}
