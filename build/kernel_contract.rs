//! The Rust side of the kernel contract, read from the CUDA sources so that nothing is written
//! twice: every `__global__` signature (name, parameter names and types) and every integer
//! constant `#define`d in kernels/ (tile sizes, threads per block, shared-memory sizes,
//! activation codes). build.rs turns them into one generated Rust module: the constants, one
//! typed launch function per kernel, and each kernel's parameter count for the emulator's check.

use std::fmt::Write;

/// A kernel parameter's type as Rust passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Int,
    Float,
    Pointer,
}

impl ParamType {
    fn rust(self) -> &'static str {
        match self {
            ParamType::Int => "i32",
            ParamType::Float => "f32",
            ParamType::Pointer => "DevicePtr",
        }
    }

    fn variant(self) -> &'static str {
        match self {
            ParamType::Int => "I32",
            ParamType::Float => "F32",
            ParamType::Pointer => "Ptr",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
}

/// One `__global__` function: its name, its parameters and its signature as written.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub signature: String,
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn param(text: &str, kernel: &str, file: &str) -> Param {
    let text = text.trim();
    let name_start = text
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let (ty, name) = text.split_at(name_start);
    let ty = ty.replace("__restrict__", "").replace("const", "");
    let ty = match ty.trim() {
        t if t.ends_with('*') => ParamType::Pointer,
        "int" => ParamType::Int,
        "float" => ParamType::Float,
        other => panic!(
            "{file}: kernel {kernel}: parameter `{text}` has type `{other}`, which the launch \
             contract does not know (int, float or a pointer)"
        ),
    };
    Param {
        name: name.to_string(),
        ty,
    }
}

/// The parameter lists a source `#define`s for kernels to share: `#define NAME_PARAMS` and the
/// list, over as many lines as its `\` continue it.
fn parameter_lists(source: &str) -> Vec<(String, String)> {
    let mut lists = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("#define") else {
            continue;
        };
        let rest = rest.trim_start();
        let name = identifier(rest);
        if !name.ends_with("_PARAMS") {
            continue;
        }
        let mut list = rest[name.len()..].to_string();
        while list.trim_end().ends_with('\\') {
            list = list.trim_end().trim_end_matches('\\').to_string();
            list += lines.next().unwrap_or("");
        }
        lists.push((name, squeeze(&list)));
    }
    lists
}

/// Every `__global__` function of a CUDA source. A parameter may be the name of a list that
/// `header` (kernels/whorl.cuh, which every source includes) or the source `#define`s
/// ([`parameter_lists`]): its parameters stand there.
pub fn kernels(source: &str, header: &str, file: &str) -> Vec<Kernel> {
    let lists: Vec<_> = parameter_lists(header)
        .into_iter()
        .chain(parameter_lists(source))
        .collect();
    let expand = |item: &str| -> String {
        let item = item.trim();
        lists
            .iter()
            .find(|(name, _)| name == item)
            .map_or(item, |(_, list)| list.as_str())
            .to_string()
    };
    source
        .split("__global__")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix("void")?.trim_start();
            let rest = match rest.strip_prefix("__launch_bounds__") {
                Some(bounds) => bounds[bounds.find(')')? + 1..].trim_start(),
                None => rest,
            };
            let name = identifier(rest);
            let open = rest.find('(')?;
            let close = open + rest[open..].find(')')?;
            let list = rest[open + 1..close]
                .split(',')
                .map(expand)
                .collect::<Vec<_>>()
                .join(", ");
            let params = list
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| param(p, &name, file))
                .collect();
            let signature = format!("{name}({})", squeeze(&list));
            (!name.is_empty()).then_some(Kernel {
                name,
                params,
                signature,
            })
        })
        .collect()
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An integer constant: `#define NAME EXPRESSION`, the expression made of numbers, earlier
/// constants, + - * / and parentheses (so it is a Rust constant expression too).
#[derive(Clone, Debug)]
pub struct Constant {
    pub name: String,
    pub expression: String,
}

pub fn constants(source: &str) -> Vec<Constant> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("#define")?;
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            let rest = rest.trim_start();
            let name = identifier(rest);
            let expression = rest[name.len()..].trim();
            let expression = expression.split("//").next().unwrap_or("").trim();
            let constant_name = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            let integer_expression = !expression.is_empty()
                && expression.chars().all(|c| {
                    c.is_ascii_uppercase() || c.is_ascii_digit() || "_ +-*/()".contains(c)
                });
            (constant_name && integer_expression).then(|| Constant {
                name,
                expression: expression.to_string(),
            })
        })
        .collect()
}

const RUST_KEYWORDS: [&str; 12] = [
    "in", "type", "ref", "move", "fn", "loop", "match", "mod", "self", "use", "impl", "box",
];

fn rust_name(name: &str) -> String {
    if RUST_KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

/// The generated module: constants (as usize), launch functions for `launched` (the kernels
/// the engine runs) and the parameter count of every kernel in `all` (tests' kernels too).
pub fn rust_module(
    constants: &[(String, Constant)],
    launched: &[(String, Kernel)],
    all: &[Kernel],
) -> String {
    let mut out = String::from(
        "// Generated by build.rs from kernels/*.cu (build/kernel_contract.rs): do not edit.\n\n",
    );
    for (file, c) in constants {
        writeln!(out, "/// `#define {} {}` in {file}.", c.name, c.expression).unwrap();
        if c.expression.starts_with('(') {
            out += "#[allow(unused_parens)]\n";
        }
        writeln!(out, "pub const {}: usize = {};", c.name, c.expression).unwrap();
    }
    out +=
        "\n/// Every kernel the emulator can run (tests/kernels/ too), with its parameter count.\n";
    out += "pub const ARITIES: &[(&str, usize)] = &[\n";
    for k in all {
        writeln!(out, "    (\"{}\", {}),", k.name, k.params.len()).unwrap();
    }
    out += "];\n";
    for (file, k) in launched {
        let params: String = k
            .params
            .iter()
            .map(|p| format!(", {}: {}", rust_name(&p.name), p.ty.rust()))
            .collect();
        let args: Vec<String> = k
            .params
            .iter()
            .map(|p| format!("KernelArg::{}({})", p.ty.variant(), rust_name(&p.name)))
            .collect();
        write!(
            out,
            "\n/// Launches `{}` ({file}).\n#[allow(clippy::too_many_arguments)]\n\
             pub fn {}<D: Device + ?Sized>(device: &mut D, launch: Launch{params}) -> Result<()> {{\n    \
             device.launch(\"{}\", launch.grid, launch.block, launch.shared_bytes, &[{}])\n}}\n",
            k.signature,
            k.name,
            k.name,
            args.join(", ")
        )
        .unwrap();
    }
    out
}
