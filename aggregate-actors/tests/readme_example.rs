//! The example under "Writing an aggregate" in the README is `examples/in_memory.rs`, verbatim:
//! this test fails when the two differ. To update the README, copy the example file (all of it)
//! between the README's `BEGIN` and `END` markers, inside the ```rust fence.

const README: &str = include_str!("../../README.md");
const EXAMPLE: &str = include_str!("../examples/in_memory.rs");

const BEGIN: &str = "<!-- BEGIN aggregate-actors/examples/in_memory.rs";
const END: &str = "<!-- END aggregate-actors/examples/in_memory.rs -->";
const FENCE_OPEN: &str = "```rust\n";
const FENCE_CLOSE: &str = "```\n";

/// The code between the README's markers, without its fence.
fn readme_block() -> Result<&'static str, String> {
    for marker in [BEGIN, END] {
        let count = README.matches(marker).count();
        if count != 1 {
            return Err(format!(
                "README.md has {count} lines `{marker}…`; expected one"
            ));
        }
    }
    let (_, after_begin) = README.split_once(BEGIN).ok_or("no BEGIN marker")?;
    let (_, block) = after_begin
        .split_once('\n')
        .ok_or("nothing after the BEGIN marker")?;
    let (block, _) = block
        .split_once(END)
        .ok_or("the END marker is before BEGIN")?;
    block
        .strip_prefix(FENCE_OPEN)
        .and_then(|code| code.strip_suffix(FENCE_CLOSE))
        .ok_or_else(|| {
            "between the markers, expected a ```rust fence opening on the line after BEGIN \
             and closing on the line before END"
                .to_owned()
        })
}

#[test]
fn the_readme_example_is_examples_in_memory_rs_verbatim() {
    let block = match readme_block() {
        Ok(block) => block,
        Err(problem) => panic!("README.md, \"Writing an aggregate\": {problem}"),
    };
    if block == EXAMPLE {
        return;
    }
    let mut readme_lines = block.lines();
    let mut example_lines = EXAMPLE.lines();
    for line in 1.. {
        match (readme_lines.next(), example_lines.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => break,
            (readme, example) => panic!(
                "the README's example differs from aggregate-actors/examples/in_memory.rs at \
                 line {line} of the example:\n  README:  {readme:?}\n  example: {example:?}\n\
                 copy the example file between the README's markers"
            ),
        }
    }
    panic!(
        "the README's example differs from aggregate-actors/examples/in_memory.rs in \
         whitespace at the ends of lines or of the file; copy the example file between the \
         README's markers"
    );
}
