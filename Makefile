# The two set-up commands for a fresh machine are `make demo` and `make test`;
# each installs what it needs first (idempotent: fast when already installed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vcm-installed
D2_PATCH := patches/detectron2-cdo-0.5.patch
RECIPE := torch==2.14.1 torchvision==0.29.1 compressai==1.2.8 "numpy<2" "opencv-python-headless<4.12" \
	pycocotools tqdm imageio-ffmpeg bjontegaard pydantic omegaconf matplotlib scikit-learn pytorch-msssim ai-edge-litert openpyxl dask distributed dask-jobqueue pytest ruff \
	"import-linter>=2,<3"

.PHONY: install demo test test-fast lint benchmark benchmark-harness benchmark-all clean experiments

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(D2_PATCH)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(RECIPE)
	$(BIN)/pip install -q --no-build-isolation -e ".[test]"
	$(MAKE) --no-print-directory detectron2
	$(BIN)/pip check
	touch $(STAMP)

# detectron2 from the package index, offline-buildable: detectron2-cdo 0.5 is upstream v0.5
# renamed, as an sdist without its C++ sources; $(D2_PATCH) (each hunk explained in its header)
# makes it build pure-Python (~40 s). With internet, upstream detectron2 (with its C++ ops)
# installed instead works the same: `pip install 'git+https://github.com/facebookresearch/detectron2.git'`.
D2_BUILD := build/detectron2-cdo
.PHONY: detectron2
detectron2:
	rm -rf $(D2_BUILD) && mkdir -p $(D2_BUILD)
	$(BIN)/pip download -q --no-deps --no-binary :all: detectron2-cdo==0.5 -d $(D2_BUILD)
	tar xzf $(D2_BUILD)/detectron2_cdo-0.5.tar.gz -C $(D2_BUILD)
	cd $(D2_BUILD)/detectron2_cdo-0.5 && patch -p2 -s < $(CURDIR)/$(D2_PATCH)
	$(BIN)/pip install -q --no-build-isolation $(D2_BUILD)/detectron2_cdo-0.5

demo: install
	$(BIN)/vcm run eval_configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# ruff, then the import contracts of .importlinter (the layer order of the README's "Architecture")
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

benchmark: install
	$(BIN)/python benchmarks/codecs.py

benchmark-harness: install
	$(BIN)/python benchmarks/harness_overhead.py

# One table of the speed figures with their goals (overhead, jobs speed-up, small pictures, cache hits,
# VVC adapter vs ffmpeg by hand, Dask per image), the machine's cores and load: a few minutes.
benchmark-all: install
	$(BIN)/python benchmarks/all.py

# The paper's claims (i)-(iv) and the Fig. 2 toy at full scale (about 1 h 45 min on 2 cores), then
# experiments/REPORT.md; `$(BIN)/python experiments/run_all.py --quick` is the smoke test.
experiments: install
	$(BIN)/python experiments/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# The three coding paradigms on COCO (eval_configs/coco_paradigms.yaml): trains the four YOLOv5n
# direct codecs first when their exports are missing (resumable), then runs the evaluation.
.PHONY: paradigms
# quality:lambda:steps (q1-q3 start from the zoo codec of their quality and need fewer steps)
DIRECT_RUNS := 4:16:400 1:1:200 2:2.5:120 3:6:120
paradigms: install
	$(BIN)/vcm train eval_configs/train/direct_yolov5n.yaml init_image_codec=vcm-hyperprior-q{quality} \
	  output=outputs/train/direct-yolov5n-q{quality} --grid $(DIRECT_RUNS)
	$(BIN)/vcm run eval_configs/coco_paradigms.yaml
