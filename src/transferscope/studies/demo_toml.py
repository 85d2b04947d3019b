"""The demo's two study files, as TOML text (``transferscope demo --print-spec`` prints them).

:mod:`.demo` runs them; tests and the study-file reference (``docs/study-file.md``) start
from them.
"""

__all__ = ["DEMO_TOML", "DEMO_TRANSFER_TOML"]

DEMO_TOML = """\
# The demo study, part 1: ImageNet EfficientNet-Lite0 fine-tuned on ants vs bees - what the
# fine-tuned model remembers of ImageNet (papers 000/001). Part 2 (DEMO_TRANSFER_TOML) audits
# what is transferred on chest X-rays.
name = "demo: efficientnet_lite0 (ImageNet) -> hymenoptera"
image_size = 128

[source]
arch = "efficientnet_lite0"

[target]
data = "hymenoptera"

[source_images]
sets = ["imagenet-samples", "imagenette/val"]
views = 5

[[models]]
name = "fine-tuned"
arch = "efficientnet_lite0"
init = "imagenet"
recipe = "paper002"
epochs = 4
batch_size = 32

[[models]]
name = "scratch-cnn"
arch = "baseline_cnn"
init = "random"
recipe = "paper000-scratch"
epochs = 15
image_size = 128

[[models]]
name = "fine-tuned-2"
arch = "efficientnet_lite0"
init = "imagenet"
recipe = "paper002"
epochs = 4
batch_size = 32
seed = 1

[analyses]
memory = "all"
transfer = "none"         # part 2 does these on a target where random init learns
transferability = "none"

[analyses.composites]
style = "paper001"
overlays_per_class = 10
repeats = 2
"""

DEMO_TRANSFER_TOML = """\
# The demo study, part 2: what is transferred (papers 002/003/004) on chest X-rays, where
# networks trained from random initialisation (RI-T) learn too, so that P-T vs RI-T compares
# two models that learned. Two seeds of each: the P-T/P-T and RI-T/RI-T pairs.
name = "demo, part 2: efficientnet_lite0 (ImageNet) -> chest-xray"
image_size = 64

[source]
arch = "efficientnet_lite0"

[target]
data = "chest-xray"

[source_images]
sets = ["imagenet-samples"]
views = 1

[[models]]
name = "xray-fine-tuned"
arch = "efficientnet_lite0"
init = "imagenet"
recipe = "paper002"
epochs = 3
batch_size = 32

[[models]]
name = "xray-fine-tuned-2"
arch = "efficientnet_lite0"
init = "imagenet"
recipe = "paper002"
epochs = 3
batch_size = 32
seed = 1

[[models]]
name = "xray-scratch"
arch = "efficientnet_lite0"
init = "random"
recipe = "paper002"
epochs = 3
batch_size = 32

[[models]]
name = "xray-scratch-2"
arch = "efficientnet_lite0"
init = "random"
recipe = "paper002"
epochs = 3
batch_size = 32
seed = 1

[analyses]
memory = "none"

# module criticality evaluates 5 x 5 (alpha, sigma) x 3 noise draws per module, each with
# BatchNorm re-estimated: 32 training images and 4 modules keep it to a minute on a CPU
[analyses.transfer_options]
criticality_images = 32
criticality_modules = 4
"""
