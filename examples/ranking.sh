#!/usr/bin/env sh
# Rank three candidate sources for hymenoptera before fine-tuning (no fine-tuning): ImageNet
# EfficientNet-Lite0 (offline weights), the same architecture with random weights, and a
# random-weight timm ResNet-18. One forward pass each over the 244 training images at 128 px,
# then LogME, LEEP, NCE, H-score, shrinkage H-score, GBC and k-NN from the features; writes
# ${OUT:-ranking-hymenoptera}/ranking.csv. About 4-5 minutes on 2 shared cores, seconds when
# the features are cached (benchmarks/RESULTS.md, "Ranking").
# Add --accuracy NAME=ACC per candidate (fine-tuned accuracy) for weighted Kendall tau and
# Pearson r of each score against it (needs 5+ candidates to tell).
exec transferscope rank --target hymenoptera --image-size 128 \
    --candidate lite0=efficientnet_lite0 \
    --candidate lite0-random=efficientnet_lite0@random \
    --candidate resnet18-random=timm:resnet18@random \
    --out "${OUT:-ranking-hymenoptera}" "$@"
