-- Argo CD health of Lamina's objects (Image, Layer, ContainerCommit), from their kstatus
-- conditions: exactly one of Ready, Reconciling, Stalled is True once the operator has seen
-- the object's current generation.  Lua 5.1 (Argo CD's gopher-lua) and later.
local hs = {status = "Progressing", message = "Waiting for the Lamina operator"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
local function behind(observed)
  return generation ~= nil and (observed == nil or observed < generation)
end
if behind(obj.status.observedGeneration) then
  hs.message = "Waiting for the Lamina operator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type ~= nil then
    conditions[condition.type] = condition
  end
end
local function says(condition)
  local text = condition.reason or condition.type
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end
local function holds(name)
  local condition = conditions[name]
  return condition ~= nil and condition.status == "True"
    and not behind(condition.observedGeneration)
end
if holds("Stalled") then
  hs.status = "Degraded"
  hs.message = says(conditions.Stalled)
elseif holds("Ready") then
  hs.status = "Healthy"
  hs.message = says(conditions.Ready)
  -- Still Healthy (the image is built and current); the advisory is shown, not hidden.
  if holds("Vulnerable") then
    hs.message = hs.message .. "; Vulnerable: " .. says(conditions.Vulnerable)
  end
elseif holds("Reconciling") then
  hs.message = says(conditions.Reconciling)
end
return hs
