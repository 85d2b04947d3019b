#!/usr/bin/env sh
# Rank three candidate sources for hymenoptera before fine-tuning (no fine-tuning): ImageNet
# EfficientNet-Lite0 (offline weights), the same architecture with random weights, and a
# random-weight timm ResNet-18. One forward pass each over the 244 training images at 128 px,
# then LogME, LEEP, NCE, H-score, shrinkage H-score, GBC and k-NN from the features; the same
# study as examples/ranking.toml, writing ${OUT:-ranking-hymenoptera}/results/ranking__scores.csv,
# study.toml and report.html. About 10 s on 2 idle cores (benchmarks/RESULTS.md, "Ranking").
# Add --fine-tune quick --epochs 2 (fine-tune each here) or --accuracy NAME=ACC per candidate
# (accuracies you have) for weighted Kendall tau and Pearson r of each score against them
# (needs 5+ candidates to tell).
exec transferscope rank --target hymenoptera --image-size 128 \
    --candidate lite0=efficientnet_lite0 \
    --candidate lite0-random=efficientnet_lite0@random \
    --candidate resnet18-random=timm:resnet18@random \
    --out "${OUT:-ranking-hymenoptera}" "$@"
