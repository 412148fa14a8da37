//! `sluice plugin new|build|test` for plugins in Python (componentize-py) and JavaScript
//! (rolldown, then ComponentizeJS): the scaffold, the build into a component of the same
//! contract, and the native unit tests (pytest; node's test runner).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::scaffold::{CONTRACT, Example, FIXTURES, VELOCITY_FIXTURES, write};

/// The language of a plugin directory or of a scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    /// What `dir` holds: a crate (`Cargo.toml`), a Python plugin (`app.py`) or a JavaScript
    /// one (`plugin.js`).
    pub fn of(dir: &Path) -> anyhow::Result<Self> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Self::Rust)
        } else if dir.join(PY_APP).is_file() {
            Ok(Self::Python)
        } else if dir.join(JS_PLUGIN).is_file() {
            Ok(Self::Js)
        } else {
            bail!(
                "{} is no plugin: it has no Cargo.toml (Rust), {PY_APP} (Python) or {JS_PLUGIN} \
                 (JavaScript); `sluice plugin new NAME --lang rust|python|js` makes one",
                dir.display()
            )
        }
    }
}

const PY_APP: &str = "app.py";
const JS_PLUGIN: &str = "plugin.js";
/// Where a build stages what it compiles (inside the plugin's directory, ignored by git).
const STAGING: &str = ".sluice-build";
/// Where a build writes the component.
const OUTPUT: &str = "build";
/// The world every plugin is built against: `handle` and `self-test`.
const WORLD: &str = "checked-handler";

const PY_HELPER: &str = include_str!("../../../plugins/python/sluice_plugin.py");
const PY_TEMPLATE: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../plugins/python/template/app.py"),
    ),
    (
        "tests/test_app.py",
        include_str!("../../../plugins/python/template/tests/test_app.py"),
    ),
    (
        "conftest.py",
        include_str!("../../../plugins/python/template/conftest.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../../plugins/python/template/requirements.txt"),
    ),
    (
        "README.md",
        include_str!("../../../plugins/python/template/README.md"),
    ),
    ("sluice_plugin.py", PY_HELPER),
];
/// The velocity example in Python (`plugins/python/velocity`): the plugin and its tests.
const PY_VELOCITY: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../plugins/python/velocity/app.py"),
    ),
    (
        "tests/test_app.py",
        include_str!("../../../plugins/python/velocity/tests/test_app.py"),
    ),
];
/// What `pip install -r requirements.txt` gives a scaffolded plugin.
const PY_TOOLS: &str = "componentize-py==0.25.1 pytest";

const JS_HELPER: &str = include_str!("../../../plugins/js/sluice.js");
const JS_ENTRY: &str = include_str!("../../../plugins/js/entry.js");
const JS_TEMPLATE: &[(&str, &str)] = &[
    (
        "plugin.js",
        include_str!("../../../plugins/js/template/plugin.js"),
    ),
    (
        "test/plugin.test.js",
        include_str!("../../../plugins/js/template/test/plugin.test.js"),
    ),
    (
        "package.json",
        include_str!("../../../plugins/js/template/package.json"),
    ),
    (
        "README.md",
        include_str!("../../../plugins/js/template/README.md"),
    ),
    ("sluice.js", JS_HELPER),
];
/// The velocity example in JavaScript (`plugins/js/velocity`), which imports the helper from
/// the directory above it; a scaffold carries the helper beside the plugin.
const JS_VELOCITY: &[(&str, &str)] = &[
    (
        "plugin.js",
        include_str!("../../../plugins/js/velocity/plugin.js"),
    ),
    (
        "test/plugin.test.js",
        include_str!("../../../plugins/js/velocity/test/plugin.test.js"),
    ),
];
/// The host interface the bundler leaves to the component's imports: the current contract's.
fn js_host_import() -> String {
    let version = crate::runtime::explain::CONTRACTS[0];
    format!("sluice:handler/host@{version}")
}

/// The component file a build of `dir` writes: `build/<dir name>.wasm`.
fn output(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let stem = dir
        .file_name()
        .map(|n| n.to_string_lossy().replace('-', "_"))
        .unwrap_or_else(|| "plugin".into());
    Ok(dir.join(OUTPUT).join(format!("{stem}.wasm")))
}

/// Create the Python or JavaScript plugin `name` in `parent` (from `example`, or the stock
/// logic): the plugin, its helper module, passing tests, sample fixtures, pinned tools; returns
/// its directory.
pub fn new(
    lang: Lang,
    name: &str,
    parent: &Path,
    example: Option<Example>,
) -> anyhow::Result<PathBuf> {
    let (template, velocity) = match lang {
        Lang::Python => (PY_TEMPLATE, PY_VELOCITY),
        Lang::Js => (JS_TEMPLATE, JS_VELOCITY),
        Lang::Rust => bail!("a Rust plugin is a crate: scaffold::new"),
    };
    crate::control::validate_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let (setting, fixtures) = match example {
        None => ("max-quantity=5", FIXTURES),
        Some(Example::Velocity) => ("max-orders=3", VELOCITY_FIXTURES),
    };
    for (file, text) in template {
        let text = match example {
            Some(Example::Velocity) => example_file(velocity, file),
            None => None,
        }
        .unwrap_or_else(|| text.to_string());
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = text
            .replace("{name}", name)
            .replace("{lib}", &name.replace('-', "_"))
            .replace("{setting}", setting);
        write(&path, &text)?;
    }
    std::fs::create_dir_all(dir.join("fixtures"))?;
    write(&dir.join("fixtures/sample.jsonl"), fixtures)?;
    write(
        &dir.join(".gitignore"),
        &format!("/{OUTPUT}\n/{STAGING}\nnode_modules/\n__pycache__/\n.pytest_cache/\n"),
    )?;
    Ok(dir)
}

/// The example's version of a template file, importing the helper beside it as a scaffold
/// carries it (the examples in this repository import it from the directory above).
fn example_file(example: &[(&str, &str)], file: &str) -> Option<String> {
    let (_, text) = example.iter().find(|(f, _)| *f == file)?;
    Some(match file {
        "plugin.js" => text.replace("'../sluice.js'", "'./sluice.js'"),
        _ => text.replace("'../../sluice.js'", "'../sluice.js'"),
    })
}

/// Build the plugin in `dir` into a component; returns its path.
pub fn build(lang: Lang, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = output(dir)?;
    let staging = dir.join(STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    std::fs::create_dir_all(staging.join("wit"))?;
    // The current contract (0.2): the helpers give `handle(message)` the key's state through
    // `state()` and make every kind of mutation.
    write(&staging.join("wit/handler.wit"), CONTRACT)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match lang {
        Lang::Python => build_python(dir, &staging, &out)?,
        Lang::Js => build_js(dir, &staging, &out)?,
        Lang::Rust => bail!("a Rust plugin is built by cargo"),
    }
    Ok(out)
}

/// componentize-py over a copy of the plugin's modules and packages (not its tests, virtual
/// environments or caches), with the helper module when the plugin carries none.
fn build_python(dir: &Path, staging: &Path, out: &Path) -> anyhow::Result<()> {
    let modules = staging.join("py");
    std::fs::create_dir_all(&modules)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let is_module = path.is_file() && name.ends_with(".py") && name != "conftest.py";
        let is_package = path.is_dir()
            && path.join("__init__.py").is_file()
            && !matches!(name.as_ref(), "tests" | "test");
        if is_module {
            std::fs::copy(&path, modules.join(name.as_ref()))?;
        } else if is_package {
            copy_tree(&path, &modules.join(name.as_ref()))?;
        }
    }
    if !modules.join("sluice_plugin.py").is_file() {
        write(&modules.join("sluice_plugin.py"), PY_HELPER)?;
    }
    let tool = find_tool(dir, "componentize-py").with_context(|| {
        format!("componentize-py is not installed: pip install {PY_TOOLS} (or -r requirements.txt)")
    })?;
    let status = Command::new(tool)
        .arg("-d")
        .arg(staging.join("wit"))
        .args(["-w", WORLD, "componentize", "app", "-p"])
        .arg(&modules)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .status()
        .context("running componentize-py")?;
    if !status.success() {
        bail!("componentize-py failed (see above)");
    }
    Ok(())
}

/// rolldown bundles the entry (the helper's host binding and the plugin with everything it
/// imports) into one module; ComponentizeJS makes it a component, without `fetch`: plugins
/// make no HTTP requests, and the component then imports no `wasi:http`.
fn build_js(dir: &Path, staging: &Path, out: &Path) -> anyhow::Result<()> {
    write(
        &staging.join("entry.js"),
        &JS_ENTRY
            .replace("{plugin}", &format!("../{JS_PLUGIN}"))
            .replace("{host}", &js_host_import()),
    )?;
    let missing = || {
        format!(
            "{} has no JavaScript tools: npm install there",
            dir.display()
        )
    };
    let rolldown = find_tool(dir, "rolldown").with_context(missing)?;
    let componentize = find_tool(dir, "componentize-js").with_context(missing)?;
    let status = Command::new(rolldown)
        .current_dir(dir)
        .arg(format!("./{STAGING}/entry.js"))
        .args(["--format", "esm", "--platform", "neutral", "--external"])
        .arg(js_host_import())
        .arg("-o")
        .arg(format!("{STAGING}/bundle.js"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running rolldown")?;
    if !status.success() {
        bail!("rolldown could not bundle {JS_PLUGIN} (see above)");
    }
    let status = Command::new(componentize)
        .current_dir(staging)
        .args(["bundle.js", "--wit", "wit", "-n", WORLD])
        .args(["-d", "http", "fetch-event", "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .status()
        .context("running componentize-js")?;
    if !status.success() {
        bail!("ComponentizeJS failed (see above)");
    }
    Ok(())
}

/// The plugin's native unit tests: pytest, or node's test runner. Whether all passed.
pub fn unit_tests(lang: Lang, dir: &Path) -> anyhow::Result<bool> {
    let mut command = match lang {
        Lang::Python => {
            let mut c = Command::new("python3");
            c.args(["-m", "pytest", "-q"]);
            c
        }
        Lang::Js => {
            let mut c = Command::new("node");
            c.arg("--test");
            c
        }
        Lang::Rust => bail!("a Rust plugin is tested by cargo"),
    };
    let status = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running the tests in {}", dir.display()))?;
    Ok(status.success())
}

/// `name` in the `node_modules/.bin` of `dir` or a directory above it, else on `PATH`.
fn find_tool(dir: &Path, name: &str) -> Option<PathBuf> {
    let start = dir.canonicalize().ok()?;
    let local = start
        .ancestors()
        .map(|d| d.join("node_modules/.bin").join(name))
        .find(|p| p.is_file());
    local.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        if name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(name))?;
        } else {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffolds_are_recognised_by_their_language() {
        let dir = tempfile::tempdir().unwrap();
        let py = new(Lang::Python, "py-rules", dir.path(), None).unwrap();
        let js = new(Lang::Js, "js-rules", dir.path(), None).unwrap();
        assert_eq!(Lang::of(&py).unwrap(), Lang::Python);
        assert_eq!(Lang::of(&js).unwrap(), Lang::Js);
        assert!(py.join("sluice_plugin.py").is_file() && py.join("tests/test_app.py").is_file());
        assert!(js.join("sluice.js").is_file() && js.join("test/plugin.test.js").is_file());
        let package = std::fs::read_to_string(js.join("package.json")).unwrap();
        assert!(package.contains("\"name\": \"js-rules\""), "{package}");
        assert!(
            new(Lang::Js, "js-rules", dir.path(), None).is_err(),
            "no overwriting"
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let error = Lang::of(&empty).unwrap_err().to_string();
        assert!(error.contains("--lang"), "{error}");
    }
}
