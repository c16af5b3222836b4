"""ZenML's Kubeflow orchestrator with the two ZenML 0.98 defects that cost the train step its
resources fixed: flavor ``audioflow_kubeflow``.

1. ``KubeflowOrchestratorSettings`` has a validator that rebuilds ``pod_settings`` from the
   older ``node_selectors`` key every time the settings are validated, and ZenML validates them
   more than once, so a ``pod_settings.node_selectors.accelerator`` never survives and the step
   gets no GPU. Here the older keys are migrated only when no ``pod_settings`` is given.
2. ``ResourceSettings.memory`` reaches KFP as a float of GB, which KFP 2 refuses (TypeError at
   submission). Here it goes as a Kubernetes quantity ("16GB" -> "16G").

Everything else is ZenML's own orchestrator. Register it once per ZenML store (docs/guides/kubeflow.md, "ZenML
on Kubeflow")::

    zenml orchestrator flavor register pipelines.zenml_kubeflow.AudioflowKubeflowOrchestratorFlavor
    zenml orchestrator register kubeflow -f audioflow_kubeflow --kubernetes_context=my-cluster

Drop it for the stock ``kubeflow`` flavor once ZenML fixes both (tests/test_zenml_kubeflow.py
checks the stock classes still have them, and fails when they are gone).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import model_validator
from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import (
    KubeflowOrchestratorConfig,
    KubeflowOrchestratorFlavor,
    KubeflowOrchestratorSettings,
)
from zenml.integrations.kubeflow.orchestrators.kubeflow_orchestrator import KubeflowOrchestrator
from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings
from zenml.utils.pydantic_utils import before_validator_handler

FLAVOR = "audioflow_kubeflow"


def _migrate_old_keys(data: dict[str, Any]) -> dict[str, Any]:
    """ZenML's migration of ``node_selectors`` into ``pod_settings``, without overwriting a
    ``pod_settings`` that is already there; the same credential check."""
    if data.get("pod_settings") is None and data.get("node_selectors"):
        data["pod_settings"] = KubernetesPodSettings(node_selectors=data["node_selectors"])
    if bool(data.get("client_username")) != bool(data.get("client_password")):
        raise ValueError("`client_username` and `client_password` both need to be set together.")
    return data


class AudioflowKubeflowOrchestratorSettings(KubeflowOrchestratorSettings):
    @model_validator(mode="before")
    @classmethod
    @before_validator_handler
    def _validate_and_migrate_pod_settings(cls, data: dict[str, Any]) -> dict[str, Any]:
        # The same name as ZenML's validator: pydantic replaces it instead of running both.
        return _migrate_old_keys(data)


class AudioflowKubeflowOrchestratorConfig(KubeflowOrchestratorConfig, AudioflowKubeflowOrchestratorSettings):
    @model_validator(mode="before")
    @classmethod
    @before_validator_handler
    def _validate_and_migrate_pod_settings(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _migrate_old_keys(data)


def kubernetes_memory(memory: str) -> str:
    """ZenML's memory ("16GB", "512MiB") as a Kubernetes quantity ("16G", "512Mi")."""
    m = re.fullmatch(r"(\d+)([KMGTP]i?)B", memory)
    if not m:
        raise ValueError(f"memory {memory!r}: expected a number and KB, MB, GB, TB, KiB, MiB, GiB or TiB")
    return m.group(1) + m.group(2)


class AudioflowKubeflowOrchestrator(KubeflowOrchestrator):
    @property
    def settings_class(self) -> type[AudioflowKubeflowOrchestratorSettings]:
        return AudioflowKubeflowOrchestratorSettings

    def _configure_container_resources(self, dynamic_component, resource_settings, node_selector_constraint=None):
        memory = resource_settings.memory
        task = KubeflowOrchestrator._configure_container_resources(
            self, dynamic_component, resource_settings.model_copy(update={"memory": None}), node_selector_constraint)
        if memory:
            quantity = kubernetes_memory(memory)
            task = task.set_memory_request(quantity).set_memory_limit(quantity)
        return task


class AudioflowKubeflowOrchestratorFlavor(KubeflowOrchestratorFlavor):
    @property
    def name(self) -> str:
        return FLAVOR

    @property
    def config_class(self) -> type[AudioflowKubeflowOrchestratorConfig]:
        return AudioflowKubeflowOrchestratorConfig

    @property
    def implementation_class(self) -> type[AudioflowKubeflowOrchestrator]:
        return AudioflowKubeflowOrchestrator
