from fleetsim.cloud.dashboard.ui import context
from fleetsim.cloud.dashboard.views.live import render

render(context())
