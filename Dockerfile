# syntax=docker/dockerfile:1
# Multi-stage: build the wheel, install it into a virtualenv, copy only the virtualenv.
#
# No registry publishes this image. Build it under the name the Helm chart expects by default
# (perfecto-exporter:<the chart's appVersion>), then load it into kind / minikube, or push it to
# your registry and set the chart's image.repository:
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t perfecto-exporter:0.1.0 .
#   docker tag perfecto-exporter:0.1.0 registry.example.com/team/perfecto-exporter:0.1.0
#   docker push registry.example.com/team/perfecto-exporter:0.1.0
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir /wheels/*.whl

FROM python:3.12-slim
# The commit the image is built from: perfecto_exporter_build_info{revision} and --version show it
# (an image has no git checkout to ask). Without it they say "unknown".
ARG REVISION=unknown
LABEL org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.title="perfecto-exporter" \
      org.opencontainers.image.description="Prometheus exporter for running Perfecto executions" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PERFECTO_EXPORTER_REVISION=${REVISION} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# nobody:nogroup, as in the Helm chart's securityContext
USER 65534:65534
EXPOSE 9817
ENTRYPOINT ["perfecto-exporter"]
CMD ["run"]
