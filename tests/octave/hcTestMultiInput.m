function layer = hcTestMultiInput(layer, numInputs)
    % NumInputs (an integer >= 2) and InputNames 'in1', ..., 'inN' of a multi-input layer double (the
    % additionLayer, concatenationLayer and depthConcatenationLayer pages).
    numInputs = hcTestCheck(numInputs, 'posint', 'NumInputs');
    if numInputs < 2
        error('hessiancoreTest:invalidProperty', 'NumInputs must be at least 2');
    end
    layer = layer.setInputs(numInputs, arrayfun(@(k) sprintf('in%d', k), 1:numInputs, 'UniformOutput', false));
end
