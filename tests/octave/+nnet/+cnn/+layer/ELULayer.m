classdef ELULayer < nnet.cnn.layer.Layer
    % Test double of eluLayer(alpha)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.elulayer.html):
    % Alpha a finite nonzero scalar (default 1); elementwise. Export only (no predict).
    properties
        Alpha = 1
    end
    properties (Constant)
        DefaultName = 'elu'
    end
    methods

        function layer = set.Alpha(layer, value)
            value = hcTestCheck(value, 'scalar', 'Alpha');
            if value == 0
                error('hessiancoreTest:invalidProperty', 'Alpha must be nonzero');
            end
            layer.Alpha = value;
        end

    end
end
