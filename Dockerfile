# syntax=docker/dockerfile:1
# One image for the bridge, the API and the simulator; the command chooses:
#   python -m api (the default), python -m bridge, python -m simulator --host 0.0.0.0 ...
# Settings are environment variables (BRIDGE_*, API_*): `python -m bridge --help` lists them.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY plc/ plc/
COPY simulator/ simulator/
COPY store/ store/
COPY bridge/ bridge/
COPY api/ api/
# The runtime dependencies only: no [dev] (test tools) and no [stack] (the embedded services of
# the local stack); every dependency ships as a wheel, so no compiler is needed.
RUN /opt/venv/bin/pip install .


FROM python:3.11-slim

LABEL org.opencontainers.image.title="barrier-bridge" \
      org.opencontainers.image.description="Bridge between REST clients, Kafka and the Modbus/TCP PLCs that drive physical barriers."

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 barrier \
    && useradd --system --uid 10001 --gid barrier --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin barrier

COPY --from=build /opt/venv /opt/venv

# An empty working directory: nothing in it can shadow the installed packages.
WORKDIR /srv/barrier-bridge
USER 10001:10001

# API, bridge metrics, simulator PLCs (first two) and simulator control.
EXPOSE 8000 9108 5020 5021 8502

CMD ["python", "-m", "api"]
