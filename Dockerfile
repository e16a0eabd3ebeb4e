# One image for the coordinator, the workers and the CLI, built from Debian 12 with the same
# packages as scripts/setup.sh (which this runs).
FROM debian:12

WORKDIR /src
COPY . /src
RUN bash scripts/setup.sh --no-build --no-browser \
 && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOESWEEP_BUILD_TESTS=OFF -DMOESWEEP_BUILD_BENCH=OFF \
 && cmake --build build -j"$(nproc)" \
 && cmake --install build --prefix /usr/local \
 && rm -rf build /var/lib/apt/lists/*

WORKDIR /data
EXPOSE 50051 8080
CMD ["moesweep-coordinator", "--listen", "0.0.0.0:50051", "--db", "/data/moesweep.db"]
