//! Routes: which plugin handles which topic (`topic=plugin`); the ingest flow consumes these
//! topics.

/// `topic=plugin` pairs, one plugin per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes(Vec<(String, String)>);

impl Routes {
    /// Later pairs for the same topic replace earlier ones.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut routes: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (topic, plugin) in pairs {
            routes.retain(|(t, _)| *t != topic);
            routes.push((topic, plugin));
        }
        Self(routes)
    }

    /// The one route `topic=plugin`.
    pub fn single(topic: &str, plugin: &str) -> Self {
        Self(vec![(topic.to_string(), plugin.to_string())])
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
        let pairs: Vec<String> = self.0.iter().map(|(t, p)| format!("{t}={p}")).collect();
        f.write_str(&pairs.join(","))
    }
}
