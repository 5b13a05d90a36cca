//! Makes the labelled data of the text transfer experiment from the shared
//! corpora (never copied into the repository): for each corpus, its first
//! 90% goes into `pretrain.txt` (what the language models pretrain on) and
//! passages of `--words` words from its last 10% become the examples of a
//! class folder `<out>/passages/<corpus>/NNNN.txt` (text the pretrained
//! models have never seen). Also `pretrain-shuffled.txt`: the same words in
//! a random order (the negative-transfer control).
//!
//!     cargo run --release --example corpus_passages -- ../shared/data/text /tmp/kiln-text 300 48

use std::fs;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: corpus_passages <text dir> <out dir> [passages per class = 300] [words = 48]"
    );
    let (src, out) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let per_class: usize = args.get(2).map_or(Ok(300), |s| s.parse())?;
    let words: usize = args.get(3).map_or(Ok(48), |s| s.parse())?;
    let corpora = ["moby", "shakespeare", "sotu"];
    let _ = fs::remove_dir_all(out.join("passages"));
    let mut pretrain = String::new();
    for name in corpora {
        let path = src.join(format!("{name}.txt"));
        let text = fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (is ../shared/data beside the checkout?)",
                path.display()
            )
        })?;
        let cut = text.floor_char_boundary(text.len() * 9 / 10);
        pretrain.push_str(&text[..cut]);
        pretrain.push('\n');
        let tail: Vec<&str> = text[cut..].split_whitespace().collect();
        let n = (tail.len() / words).min(per_class);
        anyhow::ensure!(n > 0, "{name}: its last 10% holds fewer than {words} words");
        // Evenly spaced passages over the held-out tail.
        let stride = tail.len() / n;
        let dir = out.join("passages").join(name);
        fs::create_dir_all(&dir)?;
        for k in 0..n {
            let p = tail[k * stride..k * stride + words].join(" ");
            fs::write(dir.join(format!("{k:04}.txt")), p)?;
        }
        println!(
            "{name}: {n} passages of {words} words; {} bytes for pretraining",
            cut
        );
    }
    fs::write(out.join("pretrain.txt"), &pretrain)?;
    let mut w: Vec<&str> = pretrain.split_whitespace().collect();
    let mut rng = kiln::util::Rng::new(7);
    rng.shuffle(&mut w);
    fs::write(out.join("pretrain-shuffled.txt"), w.join(" "))?;
    println!("wrote {}", out.display());
    Ok(())
}
