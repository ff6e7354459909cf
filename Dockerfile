# One image with every Granary daemon. Build: docker build -t granary .
# The build stage installs the same -dev packages as scripts/setup.sh; the
# runtime stage only their shared libraries.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libcurl4-openssl-dev libssl-dev libexpat1-dev libyaml-dev libfuse3-dev \
      libmicrohttpd-dev libjansson-dev libxxhash-dev uthash-dev libisal-dev \
      libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libgrpc-dev check libsubunit-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRANARY_E2E=OFF \
    && ninja -C /build granary-meta granary-worker granary-fuse granary-csi granary-mount granary-store \
         granary-tfrecord granary-probe granary-readcheck

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates fuse3 util-linux \
      libcurl4 libssl3 libexpat1 libyaml-0-2 libfuse3-3 libmicrohttpd12 libjansson4 \
      libxxhash0 libisal2 libprotobuf-c1 libgrpc29 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/bin/granary-meta /build/bin/granary-worker /build/bin/granary-fuse \
     /build/bin/granary-csi /build/bin/granary-mount /build/bin/granary-store /build/bin/granary-tfrecord \
     /build/bin/granary-probe /build/bin/granary-readcheck /usr/bin/
ENTRYPOINT ["/usr/bin/granary-csi"]
