# Sourced by the launch scripts: fix one run directory for the whole job, at launch time.
#
# Hydra's default run directory is timestamped per process; ranks started a second apart, or
# workers restarted by torchrun --max-restarts, would each get their own and never find each
# other's checkpoints. The scripts pass hydra.run.dir (TRAINER_RUN_DIR, else
# outputs/<recipe>/<launch time>) unless the overrides already set it or ask for a multirun.
run_dir_override() {
  local arg recipe=digits
  for arg in "$@"; do
    case "$arg" in
      hydra.run.dir=*|-m|--multirun) return 0 ;;
      recipe=*) recipe=${arg#recipe=} ;;
    esac
  done
  echo "hydra.run.dir=${TRAINER_RUN_DIR:-outputs/$recipe/$(date +%Y-%m-%d_%H-%M-%S)}"
}
