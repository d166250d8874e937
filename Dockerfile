# The EdgeFleet hub: REST API (8600), embedded MQTT broker (1883) unless EDGEFLEET_BROKER_URL names one.
#   docker build -t edgefleet-hub .
#   docker run -p 8600:8600 -p 1883:1883 -v edgefleet:/var/lib/edgefleet edgefleet-hub
# Settings: EDGEFLEET_* variables or a TOML file (`hub serve --config`), see docs/operations.md.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY targets targets
COPY fleet fleet
COPY agent agent
COPY hub hub
COPY converters converters
RUN python -m venv /opt/edgefleet && /opt/edgefleet/bin/pip install --no-cache-dir ".[hub]"

FROM python:3.11-slim
RUN groupadd --gid 1883 edgefleet-broker && useradd --uid 10001 --gid 1883 --home-dir /var/lib/edgefleet edgefleet \
    && install -d -o 10001 -g 1883 -m 0750 /var/lib/edgefleet /var/lib/edgefleet-broker /var/lib/edgefleet-kits
COPY --from=build /opt/edgefleet /opt/edgefleet
ENV PATH=/opt/edgefleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    EDGEFLEET_DATA_DIR=/var/lib/edgefleet \
    EDGEFLEET_API_HOST=0.0.0.0 \
    EDGEFLEET_BROKER_HOST=0.0.0.0
USER 10001:1883
WORKDIR /var/lib/edgefleet
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8600 1883
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8600/health', timeout=2)"
ENTRYPOINT ["edgefleet"]
CMD ["hub", "serve", "--log-format", "json"]
