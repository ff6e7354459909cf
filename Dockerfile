# One image with every Granary daemon. Build: docker build -t granary .
# (BuildKit, or buildah/podman: the compile keeps a ccache in a cache mount,
# so a rebuild after a change compiles only what changed.)
# The build stage installs the same -dev packages as scripts/setup.sh; the
# runtime stage only their shared libraries.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential ccache cmake ninja-build pkg-config \
      libcurl4-openssl-dev libssl-dev libexpat1-dev libyaml-dev libfuse3-dev \
      libmicrohttpd-dev libjansson-dev libxxhash-dev uthash-dev libisal-dev \
      libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libgrpc-dev check libsubunit-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build tree stays in a cache mount too: the layer keeps only /out.
ENV CCACHE_DIR=/root/.cache/ccache
RUN --mount=type=cache,target=/root/.cache/ccache --mount=type=cache,target=/build \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRANARY_E2E=OFF \
      -DCMAKE_C_COMPILER_LAUNCHER=ccache \
    && ninja -C /build granary-meta granary-worker granary-fuse granary-csi granary-mount granary-store \
         granary-tfrecord granary-probe granary-readcheck \
    && mkdir -p /out && cd /build/bin && cp granary-meta granary-worker granary-fuse granary-csi \
         granary-mount granary-store granary-tfrecord granary-probe granary-readcheck /out/

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates fuse3 util-linux \
      libcurl4 libssl3 libexpat1 libyaml-0-2 libfuse3-3 libmicrohttpd12 libjansson4 \
      libxxhash0 libisal2 libprotobuf-c1 libgrpc29 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/bin/
ENTRYPOINT ["/usr/bin/granary-csi"]
