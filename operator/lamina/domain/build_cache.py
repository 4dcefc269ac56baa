"""The registry build cache of an Image: where it lives, and each engine's flags for it.

The operator turns the cache on (``LAMINA_BUILD_CACHE_TAG``); each Image's cache then lives in
a repository of its own beside the image, ``LAMINA_BUILD_CACHE_REPOSITORY`` with the Image's
output repository put in (``{repository}-buildcache`` by default).  Not in the image's own
repository: BuildKit exports the cache and pushes the image at the same time, and with both in
one repository 1 of 81 cached builds failed its push with "manifest blob unknown" (the two
pushes racing over the blobs they share there).  A repository per push gives each its own
blob links; the cache stays off by default until repeated cached cascades are measured.

The cache repository is derived, never named by the tenant: it is the output repository with
a fixed suffix, so it is on the same registry, pushed with the Image's own push credentials,
and one Image imports only the cache of Images that push the same repository (an imported
cache is trusted build output).  An Image whose output repository is itself some repository's
cache repository (it ends with the suffix) is refused, so no build of this operator writes into
another repository's cache.

BuildKit writes its cache manifest as the cache tag of that repository (``mode=max``: every
intermediate step).  Buildah (``--cache-to``/``--cache-from``, with ``--layers``) pushes one
image per step, tagged by the step's cache key, to the same repository, and looks each step up
there before it runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.api.image import ImageSpec
from lamina.api.meta import REPOSITORY_PATTERN, TAG_PATTERN
from lamina.api.text import pattern_matches
from lamina.domain.dockerfile import DockerfileError

__all__ = [
    "CACHE_REPOSITORY_PATTERN",
    "DEFAULT_CACHE_REPOSITORY",
    "REPOSITORY_PLACEHOLDER",
    "BuildCache",
    "buildah_cache_args",
    "buildkit_cache_args",
    "cache_repository",
    "cache_suffix",
]

REPOSITORY_PLACEHOLDER = "{repository}"
DEFAULT_CACHE_REPOSITORY = REPOSITORY_PLACEHOLDER + "-buildcache"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# The placeholder, then a suffix that keeps any valid repository valid: a separator (inside the
# last path component, or a new component), then components.
CACHE_REPOSITORY_PATTERN = (
    rf"^\{{repository\}}(?:(?:[._]|__|-+){_COMPONENT}|/{_COMPONENT})(?:/{_COMPONENT})*$"
)
_MAX_REPOSITORY = 255


@dataclass(frozen=True)
class BuildCache:
    """The operator's registry build cache: on when it exists."""

    # BuildKit's cache manifest is this tag of the cache repository.
    tag: str
    # The cache repository of an Image: this, with the Image's output repository put in.
    repository: str = DEFAULT_CACHE_REPOSITORY


def cache_suffix(template: str) -> str:
    """What the cache repository adds to the output repository; ValueError for a template that
    could name anything but a repository beside the image's."""
    if not re.match(CACHE_REPOSITORY_PATTERN, template):
        raise ValueError(
            f"build cache repository {template[:200]!r} is not {REPOSITORY_PLACEHOLDER} followed "
            "by a suffix such as -buildcache or /buildcache"
        )
    return template.removeprefix(REPOSITORY_PLACEHOLDER)


def cache_repository(spec: ImageSpec, cache: BuildCache) -> str:
    """The Image's cache repository; DockerfileError if the Image cannot have one.

    The operator's settings are checked at start (:mod:`lamina.config`); checked here again,
    a bad one refuses the build with its reason instead of failing the handler.
    """
    if not pattern_matches(TAG_PATTERN, cache.tag):
        raise DockerfileError(f"the build cache tag {cache.tag[:200]!r} is not a tag")
    try:
        suffix = cache_suffix(cache.repository)
    except ValueError as error:
        raise DockerfileError(str(error)) from None
    repository = spec.output.repository
    if repository.endswith(suffix):
        raise DockerfileError(
            f"spec.output.repository: {repository!r} is a build cache repository (the operator "
            f"keeps each Image's build cache in {cache.repository}); push the image to "
            "another repository"
        )
    result = repository + suffix
    if len(result) > _MAX_REPOSITORY or not pattern_matches(REPOSITORY_PATTERN, result):
        raise DockerfileError(
            f"spec.output.repository: its build cache repository {result[:300]!r} is longer "
            f"than {_MAX_REPOSITORY} characters; use a shorter repository"
        )
    return result


def buildkit_cache_args(spec: ImageSpec, cache: BuildCache | None) -> list[str]:
    """BuildKit's registry cache: import what the last build exported, export every
    intermediate step (``mode=max``), so a rebuild whose parent and earlier steps did not
    change runs only the steps after the first changed one.

    The reference is a checked repository and tag (no quotes, no commas), so it cannot add
    cache options.  A first build finds no cache to import; BuildKit says so and builds.
    """
    if cache is None:
        return []
    ref = f"{cache_repository(spec, cache)}:{cache.tag}"
    insecure = ",registry.insecure=true" if spec.output.insecure else ""
    return [
        f"--export-cache=type=registry,ref={ref},mode=max,oci-mediatypes=true{insecure}",
        f"--import-cache=type=registry,ref={ref}{insecure}",
    ]


def buildah_cache_args(spec: ImageSpec, cache: BuildCache | None) -> list[str]:
    """Buildah's registry cache (needs ``--layers``): each step's layer is pushed to the cache
    repository under its cache key, and looked up there before the step runs.  Plain HTTP for
    it is the output registry's registries.conf entry (the same registry)."""
    if cache is None:
        return []
    repository = cache_repository(spec, cache)
    return [f"--cache-to={repository}", f"--cache-from={repository}"]
