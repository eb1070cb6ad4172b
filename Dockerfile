# The llmlab image: one image for every llmlab pod - the grading service, the operator, and the Ray head and
# workers that run grading jobs (it is built on Ray's own image, so KubeRay can start Ray in it, and the
# grading and deliverable entrypoints find llmlab installed with every lab's dependencies: the `course` extra).
# From the repository root:
#   docker build -t ghcr.io/llmlab/llmlab:0.1.0 .
#   docker build --build-arg BASE=rayproject/ray:2.60.0-py311-gpu -t ghcr.io/llmlab/llmlab:0.1.0-gpu .
# The Ray version of BASE must equal the chart's rayCluster.rayVersion and the `ray` pinned by pip here.
ARG BASE=rayproject/ray:2.60.0-py311
FROM ${BASE}
WORKDIR /home/ray/llmlab
COPY --chown=1000:100 pyproject.toml constraints.txt README.md ./
COPY --chown=1000:100 llmlab ./llmlab
COPY --chown=1000:100 services ./services
COPY --chown=1000:100 operators ./operators
RUN pip install --no-cache-dir -c constraints.txt ".[course,operator]" "ray[default]==2.60.0"
USER 1000
EXPOSE 8000
ENTRYPOINT ["llmlab"]
CMD ["serve", "grader", "--host", "0.0.0.0", "--port", "8000"]
