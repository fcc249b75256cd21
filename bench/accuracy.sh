#!/usr/bin/env bash
# Accuracy of every precision against the float32 reference, on every golden case of every fixture under
# $FASTVLM_SHARED_DIR/fixtures (each fixture's golden/golden.json: tiny-fastvlm's two images and its text-only
# prompt, the text models' chat, raw and long cases). Each configuration runs
# `fastvlm bench --reference <fixture> --json` over N greedy steps of the case's prompt (the raw text with
# --raw where the golden applied no chat template) and prints one Markdown row:
#   embeds    image embeddings the LLM sees, max|diff| / max|f32| (image cases only)
#   last      logits of the prompt's last position, rms(diff) / rms(f32)
#   max       the largest such logit error over the N teacher-forced steps
#   top-1     teacher-forced steps whose argmax is the reference's
#   prefix    leading tokens of the configuration's own greedy answer equal to the reference's
# Configurations: bf16, int8 (int8 vision, bf16 LLM), auto (the default: what it resolves to is printed
# above the table), and the q8_0 / q4_0 `fastvlm quantize`d checkpoints at auto.
#   bash bench/accuracy.sh [N]        (N greedy steps, default 16; BIN=path/to/fastvlm)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-16}
bin=${BIN:-build/bin/fastvlm}
fixtures=${FASTVLM_SHARED_DIR:-../shared}/fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'); $(nproc) cores; $(uptime)"
echo "command: bash bench/accuracy.sh $steps"
python3 - "$bin" "$fixtures" "$work" "$steps" <<'PY'
import json, pathlib, subprocess, sys

bin, fixtures, work, steps = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]


def cases(fixture):
    """(name, prompt, raw, image) for each golden case of a fixture."""
    golden = json.loads((fixture / "golden" / "golden.json").read_text())
    for case in golden.get("cases", []):  # text models: the exact text the goldens tokenized
        yield case["case"], case["text"], True, None
    for name in golden.get("images", {}):  # FastVLM: the chat question about each image, then without one
        image = next(p for p in (fixture / "golden").glob(name + ".*") if p.suffix in (".png", ".jpg", ".jpeg", ".webp"))
        yield name, "Describe the image.", False, image
    if "text_only" in golden:
        yield "text_only", "Describe the image.", False, None


def bench(model, dtype, reference, prompt, raw, image):
    command = [bin, "bench", "-q", "-m", str(model), "--dtype", dtype, "--reference", str(reference), "-p", prompt,
               "-n", steps, "--reps", "1", "--json", "--threads", "2"]
    if raw:
        command.append("--raw")
    if image:
        command += ["--image", str(image)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:  # a precision this CPU lacks (bf16 without AVX512-BF16) says so on stderr
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "exit %d" % run.returncode}
    return json.loads(run.stdout)


print("| fixture | case | config | precision | embeds | last | max | top-1 | prefix |")
print("|---|---|---|---|---|---|---|---|---|")
for fixture in sorted(p for p in fixtures.iterdir() if (p / "golden" / "golden.json").exists()):
    quantized = {}
    for kind in ("q8", "q4"):
        quantized[kind] = work / f"{fixture.name}-{kind}"
        subprocess.run([bin, "quantize", "-m", str(fixture), "-o", str(quantized[kind]), "--type", kind], check=True,
                       capture_output=True)
    configs = [("bf16", fixture, "bf16"), ("int8", fixture, "int8"), ("auto", fixture, "auto"),
               ("q8_0 ckpt", quantized["q8"], "auto"), ("q4_0 ckpt", quantized["q4"], "auto")]
    for name, prompt, raw, image in cases(fixture):
        for label, model, dtype in configs:
            out = bench(model, dtype, fixture, prompt, raw, image)
            if "error" in out:
                print("| %s | %s | %s | %s | - | - | - | - | - |" % (fixture.name, name, label, out["error"]), flush=True)
                continue
            a = out["accuracy"]
            embeds = "-" if a["image_embeds_rel_err"] is None else "%.2e" % a["image_embeds_rel_err"]
            print("| %s | %s | %s | %s | %s | %.2e | %.2e | %d/%d | %d/%d |" % (
                fixture.name, name, label, out["precision"], embeds, a["last_position_logit_rel_rms"],
                a["logit_rel_rms_max"], a["top1_agreement"], a["steps"], a["greedy_prefix"], a["steps"]), flush=True)
PY
echo "uptime after: $(uptime)"
