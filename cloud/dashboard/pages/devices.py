from fleetsim.cloud.dashboard.ui import context
from fleetsim.cloud.dashboard.views.devices import render

render(context())
