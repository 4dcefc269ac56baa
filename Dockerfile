# The Lamina operator image.  Builds from the repository root:
#   docker build -t lamina:dev .        (with network: pip uses PyPI)
# or offline, as `make run` does inside the local cluster: put wheels of Lamina's dependencies
# and its build backend in ./wheelhouse/ (`e2e/lib/build-lamina-image.sh --wheelhouse` makes
# them) and pip installs only from there (`--no-index --find-links`).
# The base is any Debian-based Python 3.11+ image.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
# `wheelhouse*` matches nothing without a wheelhouse: the COPY still has pyproject.toml.
COPY pyproject.toml wheelhouse* /wheelhouse/
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        offline="--no-index --find-links /wheelhouse"; \
    fi; \
    python3 -m pip wheel --no-cache-dir --disable-pip-version-check $offline --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
COPY --from=wheels /wheels /wheels
# The user has a passwd entry: Python's getpass (kopf names the operator by it) needs one.
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /wheels lamina \
    && rm -rf /wheels \
    && echo 'lamina:x:65532:65532:Lamina:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'lamina:x:65532:' >> /etc/group
# The "restricted" Pod Security profile: a numeric non-root user, nothing writable needed.
# (Commit Jobs run this image as root, privileged, by their own securityContext.)
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 9090
ENTRYPOINT ["lamina"]
CMD ["operator"]
