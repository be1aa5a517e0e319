-- Argo CD health check for rtdetr.io/RTDETRModel.
-- Install: add to argocd-cm as resource.customizations.health.rtdetr.io_RTDETRModel (docs/user-guide.md, "GitOps with Argo CD and Flux").
-- Reads the same conditions kstatus (Flux) reads: Ready + observedGeneration.
local health = {}
local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  health.status = "Progressing"
  health.message = "Waiting for the rtdetr-edge operator to pick up this model"
  return health
end

local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  health.status = "Progressing"
  health.message = "The operator has not observed generation " .. generation .. " yet"
  return health
end

local ready = condition(obj.status.conditions, "Ready")
local available = condition(obj.status.conditions, "Available")

if available ~= nil and available.status == "False" and available.reason == "ReplicasLost" then
  health.status = "Missing"
  health.message = available.message
  return health
end

if ready ~= nil and ready.status == "True" then
  if ready.reason == "ScaledToZero" then
    health.status = "Suspended"
  else
    health.status = "Healthy"
  end
  health.message = ready.message
  return health
end

-- Stalled=True (kstatus, the condition Flux reads too): the operator will not get further without
-- a change (an invalid spec, a failed quantization or gate, a refused child, a stuck rollout).
-- Reasons are not listed here: the operator decides Stalled, so both tools always agree.
local stalled = condition(obj.status.conditions, "Stalled")
if ready ~= nil and stalled ~= nil and stalled.status == "True" then
  health.status = "Degraded"
  health.message = ready.reason .. ": " .. (ready.message or "")
  return health
end

health.status = "Progressing"
if ready ~= nil then
  health.message = ready.reason .. ": " .. (ready.message or "")
else
  health.message = "Reconciling"
end
return health
