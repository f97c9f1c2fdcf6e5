#include "meseta/task-check.h"

#include "meseta/values.h"

int ms_task_check_minimums(const ms_resources *r, ms_error **err) {
  ms_scalar cpus = r ? ms_resources_scalar(r, "cpus") : 0, mem = r ? ms_resources_scalar(r, "mem") : 0;
  if (cpus >= MS_TASK_MIN_CPUS_MILLI && mem >= MS_TASK_MIN_MEM_MILLI)
    return 0;
  return ms_error_set(err, MS_INVALID_ARGUMENT,
                      "a task needs cpus >= %g and mem >= %g MiB (it asks for cpus %g, mem %g MiB)",
                      ms_scalar_to_double(MS_TASK_MIN_CPUS_MILLI), ms_scalar_to_double(MS_TASK_MIN_MEM_MILLI),
                      ms_scalar_to_double(cpus), ms_scalar_to_double(mem));
}
