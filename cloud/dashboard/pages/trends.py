from fleetsim.cloud.dashboard.ui import context
from fleetsim.cloud.dashboard.views.trends import render

render(context())
