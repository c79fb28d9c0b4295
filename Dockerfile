# One image for every component; the command picks it (see deploy/k8s):
#   python -m services.api | services.dispatcher | services.dialer | services.notifier
#   alembic upgrade head (the migrate Job) | envoy --config-path ... (the REST gateway)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The source stays here too: alembic reads pyproject.toml and the migrations beside it.
WORKDIR /app
COPY pyproject.toml ./
COPY proto/ proto/
COPY services/ services/
COPY deploy/ deploy/

# The project and its dependencies, then what `make gen` builds (gRPC modules and the
# descriptor set; no typing stubs), importable through a .pth file as in the Makefile.
RUN pip install . \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && mkdir gen \
    && python -m grpc_tools.protoc -I proto -I "$site" \
        --python_out=gen --grpc_python_out=gen \
        --include_imports --include_source_info --descriptor_set_out=gen/scheduler.pb \
        proto/scheduler/v1/*.proto \
    && touch gen/scheduler/__init__.py gen/scheduler/v1/__init__.py \
    && echo /app/gen > "$site/callback_scheduler_gen.pth" \
    && python -m compileall -q /app

# The manifests run it as this uid, with a read-only root filesystem.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

CMD ["python", "-m", "services.api"]
