/* Why `meseta run` gets no offer: read the agents, roles and quota, and say which of the
 * usual reasons it is (docs/cli.md):
 *
 *   - no agent is active;
 *   - the task is bigger than any agent (unreserved, or reserved to the role or an ancestor);
 *   - other roles' quota guarantees leave no headroom for the role: the allocator keeps
 *     U - H free, U the unreserved unallocated resources of active agents, H the unmet
 *     guarantees of the top-most guaranteed roles (docs/allocator.md, fair-share stage);
 *   - every agent's resources are allocated, offered or reserved to other roles.
 *
 * Works on the JSON form of the answers (cli_list_all); everything is borrowed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/v1/operator.pb-c.h"

#include "cli.h"

#define MAX_NAMES 4

/* Whether a resource reserved to `owner` may be used by `role` (owner is role or an ancestor). */
static bool usable_by(const char *owner, const char *role) {
  size_t n = strlen(owner);
  return strcmp(owner, role) == 0 || (strncmp(role, owner, n) == 0 && role[n] == '/');
}

/* The sum of scalar `name` in a resource array: unreserved ones, and when `role` is set
 * those reserved to it or an ancestor. */
static double sum(json_t *resources, const char *name, const char *role) {
  double total = 0;
  size_t i;
  json_t *r;
  json_array_foreach(resources, i, r) {
    if (!json_is_string(json_object_get(r, "name")) ||
        strcmp(json_string_value(json_object_get(r, "name")), name))
      continue;
    json_t *res = json_object_get(r, "reservations");
    size_t nres = json_array_size(res);
    if (nres > 0) {
      const char *owner = json_string_value(json_object_get(json_array_get(res, nres - 1), "role"));
      if (!role || !owner || !usable_by(owner, role))
        continue;
    }
    total += json_number_value(cli_json_path(r, "scalar.value"));
  }
  return total;
}

static double map_value(json_t *map, const char *name) {
  json_t *v = json_object_get(map, name);
  return json_is_object(v) ? json_number_value(json_object_get(v, "value")) : json_number_value(v);
}

static void quantities(char *buf, size_t n, const char *const *names, const double *v, size_t k) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < k && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%s %.4g", i ? ", " : "", names[i], v[i]);
}

/* Roles' unmet guarantees that take headroom from `role`: top-most guaranteed roles that
 * are neither `role` nor an ancestor of it; their names go to `who`. */
static void unmet_guarantees(json_t *roles, const char *role, const char *const *names, size_t k, double *ret,
                             char *who, size_t n) {
  size_t i, len = 0;
  json_t *r;
  who[0] = '\0';
  json_array_foreach(roles, i, r) {
    const char *name = json_string_value(json_object_get(r, "name"));
    json_t *g = cli_json_path(r, "quota.guarantees");
    if (!name || !json_is_object(g) || usable_by(name, role) || strcmp(name, role) == 0)
      continue;
    bool top = true; /* an ancestor with a guarantee covers this one */
    size_t j;
    json_t *a;
    json_array_foreach(roles, j, a) {
      const char *an = json_string_value(json_object_get(a, "name"));
      if (an && strcmp(an, name) != 0 && usable_by(an, name) &&
          json_is_object(cli_json_path(a, "quota.guarantees")))
        top = false;
    }
    if (!top)
      continue;
    bool any = false;
    for (size_t x = 0; x < k; x++) {
      double unmet = map_value(g, names[x]) - map_value(json_object_get(r, "quota_consumed"), names[x]);
      if (unmet > 0) {
        ret[x] += unmet;
        any = true;
      }
    }
    if (any && len < n)
      len += (size_t)snprintf(who + len, n - len, "%s`%s`", len ? ", " : "", name);
  }
}

/* One sentence on why nothing fits, or NULL when nothing stands out (caller frees). */
static char *explain(json_t *agents, json_t *roles, const char *role, const char *const *names,
                     const double *want, size_t k) {
  size_t i;
  json_t *a;
  int active = 0, known = 0;
  bool any_big = false;
  double best_total[MAX_NAMES] = {0}, U[MAX_NAMES] = {0}, best_free[MAX_NAMES] = {0};
  bool free_fits = false;
  json_array_foreach(agents, i, a) {
    known++;
    const char *state = json_string_value(json_object_get(a, "state"));
    if (!state || strcmp(state, "ACTIVE") != 0 || json_object_get(a, "drain_state"))
      continue;
    active++;
    bool big = true, fits = true;
    for (size_t x = 0; x < k; x++) {
      double total = sum(json_object_get(a, "total_resources"), names[x], role);
      double avail = sum(json_object_get(a, "available_resources"), names[x], role);
      /* Unallocated: available or in offers (an offer to us too). */
      U[x] += sum(json_object_get(a, "available_resources"), names[x], NULL) +
              sum(json_object_get(a, "offered_resources"), names[x], NULL);
      big = big && total + 1e-9 >= want[x];
      fits = fits && avail + 1e-9 >= want[x];
      if (total > best_total[x])
        best_total[x] = total;
      if (avail > best_free[x])
        best_free[x] = avail;
    }
    any_big = any_big || big;
    free_fits = free_fits || fits;
  }
  char need[128], have[128];
  quantities(need, sizeof(need), names, want, k);
  if (active == 0)
    return known ? ms_xasprintf("no agent is active (%d known, none ACTIVE and not draining)", known)
                 : ms_xasprintf("no agent has registered");
  if (!any_big) {
    quantities(have, sizeof(have), names, best_total, k);
    return ms_xasprintf("the task (%s) is bigger than any agent's resources for role `%s` (the largest: %s)",
                        need, role, have);
  }
  double H[MAX_NAMES] = {0}, room[MAX_NAMES];
  char who[256];
  unmet_guarantees(roles, role, names, k, H, who, sizeof(who));
  for (size_t x = 0; x < k; x++) {
    room[x] = U[x] - H[x];
    if (*who && room[x] + 1e-9 < want[x]) {
      char left[64];
      if (room[x] > 0)
        snprintf(left, sizeof(left), "only %.4g is", room[x]);
      else
        snprintf(left, sizeof(left), "none is");
      return ms_xasprintf(
          "the quota guarantees of %s hold %s %.4g of the %.4g unallocated in the cluster: %s "
          "left for role `%s`, and the task needs %s %.4g (see `meseta roles`, `meseta quota`)",
          who, names[x], H[x], U[x], left, role, names[x], want[x]);
    }
  }
  if (!free_fits) {
    quantities(have, sizeof(have), names, best_free, k);
    return ms_xasprintf("no agent has %s free for role `%s`: the rest is allocated, offered, or reserved to "
                        "other roles (the most free on one agent: %s)",
                        need, role, have);
  }
  return NULL;
}

void cli_why_waiting(cli *c, const char *role, const char *const *names, const double *want, size_t k,
                     FILE *out) {
  if (k > MAX_NAMES)
    k = MAX_NAMES;
  json_t *agents = NULL, *roles = NULL;
  ms_error *err = NULL;
  Meseta__V1__GetAgentsRequest areq = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  Meseta__V1__GetRolesRequest rreq = MESETA__V1__GET_ROLES_REQUEST__INIT;
  if (cli_list_all(c, "GetAgents", &areq.base, &meseta__v1__get_agents_response__descriptor, "agents",
                   &agents, &err) < 0 ||
      cli_list_all(c, "GetRoles", &rreq.base, &meseta__v1__get_roles_response__descriptor, "roles", &roles,
                   &err) < 0) {
    fprintf(out, "meseta: still no offer, and the master does not say why: %s\n", err->msg);
    ms_error_free(err);
  } else {
    char *why =
        explain(json_object_get(agents, "agents"), json_object_get(roles, "roles"), role, names, want, k);
    fprintf(out, "meseta: waiting for an offer: %s\n",
            why ? why : "resources look free: other frameworks may hold them in offers, or filters; waiting");
    free(why);
  }
  json_decref(agents);
  json_decref(roles);
}
