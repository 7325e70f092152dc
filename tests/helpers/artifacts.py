"""Prefect artifacts read back through the API."""

from __future__ import annotations


def read_artifact_markdown(flow_run_id: object, key: str) -> str:
    """The artifact `key` that a flow run's tasks created, read back through the Prefect API."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    return artifacts[0].data if artifacts else ""
