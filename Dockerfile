# One image with every Granary binary. Build: docker build -t granary .
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libcurl4-openssl-dev libssl-dev libexpat1-dev libyaml-dev libfuse3-dev \
      libmicrohttpd-dev check libsubunit-dev libprotobuf-c-dev protobuf-c-compiler libgrpc-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRANARY_E2E=OFF \
    && ninja -C /build granary-meta granary-worker granary-fuse granary-csi granary-store

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates fuse3 libcurl4 libexpat1 libyaml-0-2 libfuse3-3 libmicrohttpd12 \
      libprotobuf-c1 libgrpc29 util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/bin/granary-meta /build/bin/granary-worker /build/bin/granary-fuse \
     /build/bin/granary-csi /build/bin/granary-store /usr/bin/
USER root
ENTRYPOINT ["/usr/bin/granary-csi"]
