"""The Lightning and Hugging Face callbacks: real (tiny) training runs on the shared hymenoptera
data whose logged metrics at the last epoch equal a full audit of the final weights."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from test_monitor import SIZE, full_audit_numbers  # same folder
from transferscope.callbacks import read_monitor
from transferscope.data import image_folder, source_images
from transferscope.data.transforms import eval_transform
from transferscope.models import create_model


def _data(data_root, model, n=12):
    train = image_folder(data_root / "hymenoptera", "train")
    train = train.subset(list(range(0, len(train), len(train) // n))[:n])
    return train.with_transform(eval_transform(model.norm, SIZE))


def _kwargs(data_root, out):
    return dict(source_data=source_images(data_root / "imagenet-samples"), out=out,
                image_size=SIZE, target_images=16, source_images=20)


def test_lightning_callback_logs_what_a_full_audit_of_the_final_weights_gives(data_root,
                                                                              tmp_path):
    L = pytest.importorskip("lightning")
    from transferscope.callbacks import LightningAuditCallback

    source = create_model("efficientnet_lite0", init="imagenet")
    model = create_model("efficientnet_lite0", 2, init="imagenet")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.model(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    data = _data(data_root, model)
    loader = torch.utils.data.DataLoader(data, batch_size=6)
    cb = LightningAuditCallback(source, image_folder(data_root / "hymenoptera", "val"),
                                **_kwargs(data_root, tmp_path / "mon"))
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="csv")
    trainer = L.Trainer(max_epochs=2, callbacks=[cb], logger=logger, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(Module(), loader, loader)
    rows = read_monitor(tmp_path / "mon")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert model.training  # given back in train mode after the last evaluation
    with open(logger.log_dir + "/metrics.csv") as fh:
        logged = [r for r in csv.DictReader(fh) if r.get("transferscope/target_accuracy/accuracy")]
    assert len(logged) == 3
    last = {k: float(v) for k, v in logged[-1].items() if k.startswith("transferscope/") and v}
    rk, dist, acc, cka = full_audit_numbers(source, model.eval(), cb.monitor)
    assert last["transferscope/retained_knowledge/classes_recall_ge_50"] == \
        rk["classes_recall_ge_50"]
    assert last["transferscope/retained_knowledge/mean_recall"] == pytest.approx(
        rk["mean_recall"], abs=1e-6)
    assert last["transferscope/target_accuracy/accuracy"] == pytest.approx(acc, abs=1e-6)
    total = float(dist["l2"].iloc[-1])
    assert last["transferscope/distance_to_pretrained/total"] == pytest.approx(total, rel=1e-5)
    assert total > 0
    assert last["transferscope/cka_to_pretrained/block01"] == pytest.approx(cka["block01"],
                                                                            abs=1e-5)
    assert json.loads((tmp_path / "mon" / "monitor_summary.json").read_text())["evaluations"] == 3


def test_hf_trainer_callback_logs_what_a_full_audit_of_the_final_weights_gives(data_root,
                                                                               tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transferscope.callbacks import HFAuditCallback
    from transferscope.models import wrap_module

    cfg = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    src_net = transformers.ResNetForImageClassification(
        transformers.ResNetConfig(num_labels=1000, **cfg))
    net = transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=2, **cfg))
    net.resnet.load_state_dict(src_net.resnet.state_dict())
    source = wrap_module(src_net)
    data = _data(data_root, source)

    class Dict(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            x, y = data[i]
            return {"pixel_values": x, "labels": y}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=6,
        learning_rate=0.05, report_to=[], logging_strategy="no", save_strategy="no",
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=net, args=args, train_dataset=Dict())
    cb = HFAuditCallback.attach(trainer, src_net, image_folder(data_root / "hymenoptera", "val"),
                                **_kwargs(data_root, tmp_path / "mon"))
    trainer.train()
    rows = read_monitor(tmp_path / "mon")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    logged = [h for h in trainer.state.log_history if "transferscope/target_accuracy/accuracy" in h]
    assert len(logged) == 3
    final = wrap_module(net)  # the final weights, as `transferscope audit` would load them
    rk, dist, acc, cka = full_audit_numbers(source, final, cb.monitor)
    last = logged[-1]
    assert last["transferscope/retained_knowledge/classes_recall_ge_50"] == \
        rk["classes_recall_ge_50"]
    assert last["transferscope/target_accuracy/accuracy"] == pytest.approx(acc, abs=1e-6)
    total = float(dist["l2"].iloc[-1])
    assert last["transferscope/distance_to_pretrained/total"] == pytest.approx(total, rel=1e-5)
    assert total > 0
    for layer, value in cka.items():
        assert last[f"transferscope/cka_to_pretrained/{layer}"] == pytest.approx(value, abs=1e-5)
