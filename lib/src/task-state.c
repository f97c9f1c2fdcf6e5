/* Task states: which end a task, and their names. */
#include "meseta/task-state.h"

bool ms_task_state_terminal(Meseta__V1__TaskState s) {
  switch (s) {
  case MESETA__V1__TASK_STATE__TASK_FINISHED:
  case MESETA__V1__TASK_STATE__TASK_FAILED:
  case MESETA__V1__TASK_STATE__TASK_KILLED:
  case MESETA__V1__TASK_STATE__TASK_ERROR:
  case MESETA__V1__TASK_STATE__TASK_LOST:
  case MESETA__V1__TASK_STATE__TASK_DROPPED:
  case MESETA__V1__TASK_STATE__TASK_GONE:
  case MESETA__V1__TASK_STATE__TASK_GONE_BY_OPERATOR:
    return true;
  default:
    return false;
  }
}

const char *ms_task_state_name(Meseta__V1__TaskState s) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&meseta__v1__task_state__descriptor, (int)s);
  return v ? v->name : "?";
}
