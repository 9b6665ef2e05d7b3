#!/usr/bin/env bash
# End to end on embedded defaults: a throwaway store, a generated model, two versions,
# switch, roll back, materialise, verify; then publish to a local directory remote and fetch
# into a second store, as a colleague would. Nothing to set up; nothing outside $WORK is touched.
set -euo pipefail
WORK=${WORK:-$(mktemp -d -t casstore-quickstart.XXXXXX)}
export CAS_HOME="$WORK/store" CAS_HASH_CACHE="$WORK/hashes.sqlite" CAS_CONFIG="$WORK/config.toml"
python3 - "$WORK/model" <<'PY'
import json, os, struct, sys
root = sys.argv[1]
os.makedirs(f"{root}/tokenizer", exist_ok=True)
header = json.dumps({"w": {"dtype": "F16", "shape": [1024, 1024], "data_offsets": [0, 2 << 20]}}).encode()
with open(f"{root}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + os.urandom(2 << 20))
json.dump({"model_type": "demo", "dim": 1024}, open(f"{root}/config.json", "w"))
open(f"{root}/tokenizer/vocab.txt", "w").write("\n".join(f"tok{i}" for i in range(1000)))
PY
cas add "$WORK/model" --name demo --version 1.0.0 --note "first"
echo '{"model_type": "demo", "dim": 2048}' > "$WORK/model/config.json"
cas add "$WORK/model" --name demo --version 1.1.0 --note "new config"
cas use demo@1.1.0
cas list
cas rollback demo
cas log demo
cas checkout demo@1.1.0 "$WORK/checkout"
diff -r "$WORK/model" "$WORK/checkout" && echo "checkout matches the source"
ls "$(cas path demo)"
cas verify
cas remote add team "$WORK/remote" --default
cas push demo@1.0.0
cas push demo@1.1.0
cas --store "$WORK/colleague" versions demo
cas --store "$WORK/colleague" fetch demo            # the latest: 1.1.0
cas --store "$WORK/colleague" checkout demo "$WORK/colleague-checkout"
diff -r "$WORK/model" "$WORK/colleague-checkout" && echo "fetched copy matches the source"
cas --store "$WORK/colleague" verify
echo "quickstart OK: store at $CAS_HOME"
