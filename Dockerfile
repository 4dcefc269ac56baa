# The Lamina operator image.  Builds from the repository root:
#   docker build -t lamina:dev .        (or BuildKit inside the local cluster)
# The base is any Debian-based Python 3.11+ image; the local cluster serves one under the
# usual name through its docker.io mirror.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python3 -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
COPY --from=wheels /wheels /wheels
RUN python3 -m pip install --no-cache-dir --no-index --find-links /wheels lamina \
    && rm -rf /wheels
# The "restricted" Pod Security profile: a numeric non-root user, nothing writable needed.
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 9090
ENTRYPOINT ["lamina"]
CMD ["operator"]
