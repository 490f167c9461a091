"""Argo Workflows templates of the loop, generated with hera: ``autocode-train`` (one training
from a config), ``autocode-tune`` (a hyper-parameter search) and ``autocode-loop`` (sample →
campaign → wait → export → retrain → promote) as ``WorkflowTemplate``s, and a
``CronWorkflow`` running the loop on a schedule. Every step is a container of the training image
(Dockerfile.autocode-train, entry point ``autocode``) running the same command as locally.

Configuration reaches the pods as parameters (a training config as raw YAML: an Argo raw
artifact written to a file), the MLflow / S3 / Label Studio settings as environment variables,
the keys from Kubernetes Secrets (never inlined), the nomenclature files from a volume (a
PersistentVolumeClaim, as `AUTOCODE_NOMENCLATURES`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocode.errors import UserError
from autocode.tune import FORWARDED_ENV, S3_SECRET_KEYS, _unknown_keys

LABELS = {"app.kubernetes.io/name": "autocode", "app.kubernetes.io/part-of": "autocode-loop"}
CONFIG_PATH = "/tmp/autocode/config.yaml"  # noqa: S108 (inside the container)
SPACE_PATH = "/tmp/autocode/space.yaml"  # noqa: S108
NOMENCLATURES = "/data/nomenclatures"


class ArgoError(UserError, ValueError):
    """A template option or manifest that is not valid."""


@dataclass
class ArgoSettings:
    image: str = "autocode-train:latest"
    namespace: str | None = None
    model: str = "autocode-naf"
    tracking_uri: str = "http://mlflow:5000"
    # names of Secrets (not secrets): keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
    # LABEL_STUDIO_API_KEY
    s3_secret: str = "autocode-s3"  # noqa: S105
    label_studio_secret: str = "autocode-label-studio"  # noqa: S105
    label_studio_url: str = "http://label-studio:8080"
    nomenclatures_claim: str = "autocode-nomenclatures"
    service_account: str | None = None
    schedule: str = "0 3 * * 1"  # Mondays at 03:00
    timezone: str = "Europe/Paris"
    s3_endpoint: str | None = None


def _env(settings: ArgoSettings, label_studio: bool = False) -> list[Any]:
    from hera.workflows import Env
    from hera.workflows.models import EnvVar, EnvVarSource, SecretKeySelector

    def secret(name: str, key: str) -> EnvVar:
        return EnvVar(
            name=key, value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name=name, key=key))
        )

    env: list[Any] = [
        Env(name="MLFLOW_TRACKING_URI", value="{{workflow.parameters.tracking-uri}}"),
        Env(name="AUTOCODE_NOMENCLATURES", value=NOMENCLATURES),
    ]
    if settings.s3_endpoint:
        env += [Env(name=name, value=settings.s3_endpoint) for name in FORWARDED_ENV[:2]]
    env += [secret(settings.s3_secret, key) for key in S3_SECRET_KEYS]
    if label_studio:
        env += [
            Env(name="LABEL_STUDIO_URL", value="{{workflow.parameters.label-studio-url}}"),
            secret(settings.label_studio_secret, "LABEL_STUDIO_API_KEY"),
        ]
    return env


def _common(settings: ArgoSettings, name: str, entrypoint: str, parameters: dict[str, str]):
    from hera.workflows import Parameter
    from hera.workflows.models import (
        PersistentVolumeClaimVolumeSource,
        PodSecurityContext,
        TTLStrategy,
        Volume,
    )

    return {
        "name": name,
        "namespace": settings.namespace,
        "entrypoint": entrypoint,
        "labels": {**LABELS, "autocode/template": name},
        "service_account_name": settings.service_account,
        "arguments": [Parameter(name=k, value=v) for k, v in parameters.items()],
        "volumes": [
            Volume(
                name="nomenclatures",
                persistent_volume_claim=PersistentVolumeClaimVolumeSource(
                    claim_name=settings.nomenclatures_claim, read_only=True
                ),
            )
        ],
        # the image's user; no privilege
        "security_context": PodSecurityContext(run_as_non_root=True, run_as_user=10001),
        "ttl_strategy": TTLStrategy(seconds_after_completion=7 * 24 * 3600),
    }


def _container(
    settings: ArgoSettings,
    name: str,
    args: list[str],
    *,
    label_studio: bool = False,
    config: bool = False,
    space: bool = False,
    cpu: str = "1",
    memory: str = "4Gi",
):
    from hera.workflows import Container, RawArtifact
    from hera.workflows.models import ResourceRequirements, VolumeMount

    artifacts = []
    if config:
        artifacts.append(
            RawArtifact(name="config", path=CONFIG_PATH, data="{{workflow.parameters.config}}")
        )
    if space:
        artifacts.append(
            RawArtifact(name="space", path=SPACE_PATH, data="{{workflow.parameters.space}}")
        )
    return Container(
        name=name,
        image=settings.image,
        command=["autocode"],
        args=args,
        env=_env(settings, label_studio),
        inputs=artifacts or None,
        volume_mounts=[VolumeMount(name="nomenclatures", mount_path=NOMENCLATURES, read_only=True)],
        resources=ResourceRequirements(
            requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}
        ),
    )


def training_template(settings: ArgoSettings):
    """``autocode-train``: ``autocode train --config`` with the config given as a parameter."""
    from hera.workflows import Steps, WorkflowTemplate

    parameters = {"config": "{}", "tracking-uri": settings.tracking_uri}
    with WorkflowTemplate(**_common(settings, "autocode-train", "main", parameters)) as template:
        train = _container(settings, "train", ["train", "--config", CONFIG_PATH], config=True)
        with Steps(name="main"):
            train(name="train")
    return template


def tuning_template(settings: ArgoSettings):
    """``autocode-tune``: ``autocode tune`` (trials in a process pool in one pod, each tracked
    as a nested MLflow run; the best config written to the pod's log)."""
    from hera.workflows import Steps, WorkflowTemplate

    parameters = {"config": "{}", "space": "{}", "workers": "2",
                  "tracking-uri": settings.tracking_uri}  # fmt: skip
    args = ["tune", "--space", SPACE_PATH, "--config", CONFIG_PATH,
            "--workers", "{{workflow.parameters.workers}}"]  # fmt: skip
    with WorkflowTemplate(**_common(settings, "autocode-tune", "main", parameters)) as template:
        tune = _container(settings, "tune", args, config=True, space=True, cpu="2", memory="8Gi")
        with Steps(name="main"):
            tune(name="tune")
    return template


#: The options every step of the loop is given (`autocode loop run`, one step a pod).
LOOP_ARGS = [
    "loop", "run", "--name", "{{workflow.parameters.model}}",
    "--project", "{{workflow.parameters.project-prefix}}-{{workflow.name}}",
    "--gold", "{{workflow.parameters.gold}}", "--config", CONFIG_PATH,
    "--data", "{{workflow.parameters.logs}}", "--window", "{{workflow.parameters.window}}",
    "--size", "{{workflow.parameters.size}}", "--holdout", "{{workflow.parameters.holdout}}",
    "--rule", "{{workflow.parameters.rule}}", "--alpha", "{{workflow.parameters.alpha}}",
    "--no-fail-on-keep",
]  # fmt: skip
#: The wait step checks once; Argo retries it (exit 3: not complete) every hour for a week.
WAIT_RETRIES = 168
WAIT_EXIT_CODE = 3


def loop_parameters(settings: ArgoSettings) -> dict[str, str]:
    return {
        "model": settings.model,
        "tracking-uri": settings.tracking_uri,
        "label-studio-url": settings.label_studio_url,
        "logs": "s3://autocode-logs/parquet",
        "window": "last:7d",
        "size": "200",
        "gold": "s3://autocode-gold/",
        "campaigns": "s3://autocode-gold/campaigns",
        "project-prefix": "autocode",
        "config": "{}",
        "holdout": "0.2",
        "rule": "not-worse",
        "alpha": "0.05",
    }


def loop_template(settings: ArgoSettings):
    """``autocode-loop``: `LOOP_STEPS` one after the other, each a pod; a step that fails stops
    the loop (the champion is untouched unless the last step promotes)."""
    from hera.workflows import RetryStrategy, Steps, WorkflowTemplate
    from hera.workflows.models import Backoff

    from autocode.loop.run import STEPS

    common = _common(settings, "autocode-loop", "loop", loop_parameters(settings))
    with WorkflowTemplate(**common) as template:
        containers = []
        for name in STEPS:
            container = _container(
                settings,
                name,
                [*LOOP_ARGS, "--steps", name],
                label_studio=name in LABEL_STUDIO_STEPS,
                config=True,
            )
            if name == "wait":
                container.retry_strategy = RetryStrategy(
                    limit=WAIT_RETRIES,
                    retry_policy="OnFailure",
                    expression=f"asInt(lastRetry.exitCode) == {WAIT_EXIT_CODE}",
                    backoff=Backoff(duration="1h"),
                )
            containers.append(container)
        with Steps(name="loop"):
            for container in containers:
                container(name=container.name)
    return template


LABEL_STUDIO_STEPS = frozenset({"campaign", "wait", "export"})


def cron_loop(settings: ArgoSettings):
    """``autocode-loop-weekly``: the loop template on ``settings.schedule``; one at a time."""
    from hera.workflows import CronWorkflow
    from hera.workflows.models import WorkflowTemplateRef

    return CronWorkflow(
        name="autocode-loop-weekly",
        namespace=settings.namespace,
        labels=LABELS,
        schedules=[settings.schedule],
        timezone=settings.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=3600,
        successful_jobs_history_limit=4,
        failed_jobs_history_limit=4,
        workflow_template_ref=WorkflowTemplateRef(name="autocode-loop"),
        service_account_name=settings.service_account,
    )


def manifests(settings: ArgoSettings) -> dict[str, dict[str, Any]]:
    """File name → manifest of every template and the cron workflow, each validated."""
    built = {
        "autocode-train.yaml": training_template(settings),
        "autocode-tune.yaml": tuning_template(settings),
        "autocode-loop.yaml": loop_template(settings),
        "autocode-loop-cron.yaml": cron_loop(settings),
    }
    out = {}
    for file, workflow in built.items():
        manifest = workflow.to_dict()
        validate(manifest)
        out[file] = manifest
    return out


def write(settings: ArgoSettings, output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, manifest in manifests(settings).items():
        path = output / file
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        paths.append(path)
    return paths


KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")


def validate(manifest: Mapping[str, Any]) -> None:
    """Validate a manifest against Argo's schema as hera generates it into models (the
    ``io.argoproj.workflow.v1alpha1`` OpenAPI definitions), strictly: a key the schema does not
    know is an error, and the entrypoint and every step's or task's template must exist (in the
    manifest, or a workflow template it refers to)."""
    from hera.workflows import models

    kind = manifest.get("kind")
    if manifest.get("apiVersion") != "argoproj.io/v1alpha1" or kind not in KINDS:
        raise ArgoError(f"not an argoproj.io/v1alpha1 {' / '.join(KINDS)}: {kind!r}")
    try:
        model = getattr(models, str(kind)).model_validate(manifest)
    except Exception as exc:  # pydantic's ValidationError lists every error
        raise ArgoError(f"{kind} {_name(manifest)}: {exc}") from None
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    unknown = _unknown_keys(manifest, dumped, "")
    if unknown:
        raise ArgoError(f"{kind} {_name(manifest)}: keys not in the Argo schema: {unknown}")
    spec = model.spec.workflow_spec if kind == "CronWorkflow" else model.spec
    if spec.workflow_template_ref is not None and not spec.templates:
        return
    templates = {t.name for t in spec.templates or []}
    if spec.entrypoint not in templates:
        raise ArgoError(f"{_name(manifest)}: entrypoint {spec.entrypoint!r} is not a template")
    for template in spec.templates or []:
        steps = [s for group in template.steps or [] for s in group.root]
        tasks = (template.dag.tasks if template.dag else []) or []
        for step in [*steps, *tasks]:
            if step.template not in templates:
                raise ArgoError(f"{step.name!r} uses unknown template {step.template!r}")


def _name(manifest: Mapping[str, Any]) -> str:
    metadata = manifest.get("metadata") or {}
    return str(metadata.get("name") or metadata.get("generateName") or "?")
