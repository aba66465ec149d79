-- Argo CD health check for torchrollout.io/ModelDeployment.
--
-- Reads what the operator writes to status: phase, message, observedGeneration, pauseReason,
-- rollbackReason and the Ready/Degraded/PodsReady conditions. A rolled-back canary is
-- Degraded, not Healthy: Git still names the version that was rejected. Nothing unknown is
-- Healthy; an unknown phase reads as Progressing.
--
-- Written for Argo CD's gopher-lua (Lua 5.1) as a script from argocd-cm gets it: only the
-- base and table libraries, so no string, math or os functions (concatenation only).

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

local function kubectlHint(md, verb)
  local meta = md.metadata or {}
  local hint = "kubectl torchrollout " .. verb .. " " .. text(meta.name)
  if meta.namespace ~= nil then
    hint = hint .. " -n " .. text(meta.namespace)
  end
  return hint
end

local function orPhase(message, phase)
  if message == "" then
    return "phase " .. phase
  end
  return message
end

local MOVING = {
  Pending = true,
  Building = true,
  Progressing = true,
  Promoting = true,
  RollingBack = true,
}

local function assess(md)
  local meta = md.metadata or {}
  local spec = md.spec or {}
  local status = md.status
  local generation = tonumber(meta.generation)

  -- An invalid spec is refused without observing its generation, so it comes first.
  if type(status) == "table" then
    local refused = condition(status, "Degraded")
    if refused ~= nil and refused.status == "True" and refused.reason == "InvalidSpec"
        and (generation == nil or tonumber(refused.observedGeneration) == generation) then
      return "Degraded", "invalid spec: " .. text(refused.message) .. "; fix it in Git"
    end
  end

  local observed = nil
  if type(status) == "table" and status.phase ~= nil then
    observed = tonumber(status.observedGeneration)
  end
  if observed == nil or (generation ~= nil and observed < generation) then
    local waiting = "waiting for the operator to observe "
    if generation == nil then
      waiting = waiting .. "this ModelDeployment"
    else
      waiting = waiting .. "generation " .. text(generation)
    end
    if observed == nil then
      return "Progressing",
        waiting .. " (no rollout status yet; is the torchrollout operator running?)"
    end
    return "Progressing", waiting .. " (it last observed " .. text(observed) .. ")"
  end

  local phase = text(status.phase)
  local message = text(status.message)
  local paused = spec.paused == true

  if phase == "Failed" then
    return "Degraded", "deploy failed: " .. orPhase(message, phase)
  end

  if phase == "RolledBack" then
    local rejected = status.canaryVersion
    if rejected == nil and type(spec.model) == "table" then
      rejected = spec.model.version
    end
    local reason = status.rollbackReason
    if reason == nil or reason == "" then
      reason = orPhase(message, phase)
    end
    local stable = "The stable version"
    if status.stableVersion ~= nil then
      stable = "Version " .. text(status.stableVersion)
    end
    return "Degraded", "version " .. text(rejected) .. " was rolled back: " .. reason .. ". "
      .. stable .. " serves all traffic, though Git still names " .. text(rejected)
      .. ": run " .. kubectlHint(md, "retry") .. " (annotation torchrollout.io/retry)"
      .. " to try it again, or commit a new version"
  end

  if phase == "Paused" then
    local why = orPhase(message, phase)
    if status.pauseReason ~= nil then
      why = why .. " (pause reason: " .. text(status.pauseReason) .. ")"
    end
    if paused then
      why = why .. "; set spec.paused to false in Git to resume"
    end
    return "Suspended", why
  end

  if MOVING[phase] then
    return "Progressing", orPhase(message, phase)
  end

  if phase == "Succeeded" then
    local degraded = condition(status, "Degraded")
    if degraded ~= nil and degraded.status == "True" then
      return "Degraded", text(degraded.reason) .. ": " .. text(degraded.message)
    end
    local ready = condition(status, "Ready")
    if ready ~= nil and ready.status == "False" then
      local why = "not serving (Ready is False): " .. text(ready.message)
      local pods = condition(status, "PodsReady")
      if pods ~= nil and pods.status == "False" then
        why = why .. "; " .. text(pods.message)
      end
      return "Degraded", why
    end
    if ready == nil or ready.status ~= "True" then
      return "Progressing", "waiting for the Ready condition (" .. orPhase(message, phase) .. ")"
    end
    if paused then
      return "Suspended", "spec.paused is true: no new version rolls out until it is false in Git ("
        .. orPhase(message, phase) .. ")"
    end
    return "Healthy", orPhase(message, phase)
  end

  return "Progressing", "phase " .. phase .. " is unknown to this health check; status: "
    .. orPhase(message, phase)
end

local hs = {}
hs.status, hs.message = assess(obj)
return hs
